//! All SQL for the `job_run` table: its staging tables, the writes of new runs (settled in memory,
//! `changes::settle`; COPYed straight into `job_run`, with an idempotent insert as the fallback, see
//! `store::new_rows`) and the guarded update of stored ones.
//!
//! The update implements the run rules of `docs/precedence.md` in one statement: ended states absorb, active
//! states only move forward, the first ending decides the end columns, timestamps keep the newest value, and an
//! absent value never erases a stored one.

use crate::changes::settle::SettledRun;
use crate::changes::{RunDelta, RunRow};

use super::copy::CopyWriter;

/// Per-connection staging tables (emptied at commit).
pub const STAGING: &str = "
CREATE TEMP TABLE IF NOT EXISTS li_run_new (
    run_id text, job_id text, cluster text, node text, leased timestamp, pool text, job_run_state smallint,
    pending timestamp, started timestamp, finished timestamp, exit_code integer, error bytea, debug bytea,
    failure_category text, failure_subcategory text, scheduler_termination_reason jsonb, ingress_addresses jsonb,
    ingester_category_source text
) ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS li_run_new_run_id ON li_run_new (run_id);
CREATE TEMP TABLE IF NOT EXISTS li_run_update (
    run_id text PRIMARY KEY, active_state smallint, pending timestamp, started timestamp, running_node text,
    end_state smallint, end_at timestamp, exit_code integer, end_error bytea, end_node text,
    termination_reason jsonb, category text, subcategory text, late_category text, late_subcategory text,
    nonterminal_error bytea, error_debug bytea, info_debug bytea, ingress jsonb, category_source text
) ON COMMIT DELETE ROWS;
";

pub const COPY_NEW: &str = "COPY li_run_new FROM STDIN (FORMAT binary)";
/// The keys alone, for deciding orphans and which new runs exist already (`store::new_rows`).
pub const COPY_NEW_KEYS: &str = "COPY li_run_new (run_id, job_id) FROM STDIN (FORMAT binary)";
/// New runs straight into `job_run`, with the columns of [`copy_new`] (the staging table's, in its order).
pub const COPY_DIRECT: &str = "COPY job_run (run_id, job_id, cluster, node, leased, pool, job_run_state, pending,
    started, finished, exit_code, error, debug, failure_category, failure_subcategory, scheduler_termination_reason,
    ingress_addresses, ingester_category_source) FROM STDIN (FORMAT binary)";
pub const COPY_UPDATE: &str = "COPY li_run_update FROM STDIN (FORMAT binary)";

/// The decision of the run merge (docs/precedence.md, run rules 2–8), as the CTEs `d` and `n`, which follow a CTE
/// `cur` of current rows (the run's columns the rules read, `ended`, `rank`): ended states absorb, active states
/// only move forward, the first ending decides the end columns, timestamps keep the newest value, and an absent
/// value never erases a stored one. A run without a staged update keeps its current values. The staged update is
/// a primary-key probe per run (LATERAL): the planner, which has no statistics on staging tables, once joined it by
/// a nested loop over the whole table (quadratic; 85% of a batch's insert).
macro_rules! run_merge {
    () => {
        concat!(
            "
d AS (
    SELECT c.*, u.active_state, u.pending AS u_pending, u.started AS u_started, u.running_node, u.end_state,
           u.end_at, u.exit_code AS u_exit_code, u.end_error, u.end_node, u.termination_reason, u.category,
           u.subcategory, u.late_category, u.late_subcategory, u.nonterminal_error, u.error_debug, u.info_debug,
           u.ingress, u.category_source,
           (NOT c.ended AND u.end_state IS NOT NULL) AS ends
    FROM cur c
    LEFT JOIN LATERAL (SELECT * FROM li_run_update x WHERE x.run_id = c.run_id LIMIT 1) u ON true
), n AS (
    SELECT d.*, d.run_id AS key,
        CASE WHEN d.ended THEN d.job_run_state
             WHEN d.end_state IS NOT NULL THEN d.end_state
             WHEN d.active_state IS NOT NULL
                  AND (CASE d.active_state WHEN 11 THEN 0 WHEN 1 THEN 1 WHEN 2 THEN 2 ELSE -1 END) > d.rank
                  THEN d.active_state
             ELSE d.job_run_state END AS new_state,
        GREATEST(d.pending, d.u_pending) AS new_pending,
        GREATEST(d.started, d.u_started) AS new_started,
        CASE WHEN d.ends THEN COALESCE(d.end_at, d.finished) ELSE d.finished END AS new_finished,
        CASE WHEN d.ends THEN COALESCE(d.end_node, d.running_node, d.node)
             WHEN d.ended THEN COALESCE(d.node, d.running_node)
             ELSE COALESCE(d.running_node, d.node) END AS new_node,
        CASE WHEN d.ends THEN COALESCE(d.u_exit_code, d.exit_code) ELSE d.exit_code END AS new_exit_code,
        CASE WHEN d.ends THEN COALESCE(d.end_error, d.error, d.nonterminal_error)
             WHEN d.ended THEN d.error
             ELSE COALESCE(d.error, d.nonterminal_error) END AS new_error,
        COALESCE(d.info_debug, d.debug, d.error_debug) AS new_debug,
        CASE WHEN d.ends THEN COALESCE(d.category, d.failure_category, d.late_category)
             ELSE COALESCE(d.failure_category, d.category, d.late_category) END AS new_category,
        CASE WHEN d.ends THEN COALESCE(d.subcategory, d.failure_subcategory, d.late_subcategory)
             ELSE COALESCE(d.failure_subcategory, d.subcategory, d.late_subcategory) END AS new_subcategory,
        -- Who named the category: follows the value chosen above (issue 10, analytics.classify_failures).
        CASE WHEN d.ends AND d.category IS NOT NULL THEN d.category_source
             ELSE d.ingester_category_source END AS new_category_source,
        CASE WHEN d.ends THEN COALESCE(d.termination_reason, d.scheduler_termination_reason)
             ELSE d.scheduler_termination_reason END AS new_termination_reason,
        CASE WHEN d.ingress IS NULL THEN d.ingress_addresses
             ELSE COALESCE(d.ingress_addresses, '{}'::jsonb) || d.ingress END AS new_ingress
    FROM d
)"
        )
    };
}

/// The fallback of [`COPY_DIRECT`] (`store::new_rows`): inserts the staged new runs unless they exist. Returns the
/// staged runs that were *not* inserted: they exist already, and their deltas are staged for [`UPDATE`] instead.
/// Runs of unknown jobs were taken out of staging before (`store::orphans`); the parent probe remains a guard.
pub const INSERT: &str = "
WITH inserted AS (
    INSERT INTO job_run (run_id, job_id, cluster, node, leased, job_run_state, pool, pending, started, finished,
                         exit_code, error, debug, failure_category, failure_subcategory,
                         scheduler_termination_reason, ingress_addresses, ingester_category_source)
    SELECT s.run_id, s.job_id, s.cluster, s.node, s.leased, s.job_run_state, s.pool, s.pending, s.started,
           s.finished, s.exit_code, s.error, s.debug, s.failure_category, s.failure_subcategory,
           s.scheduler_termination_reason, s.ingress_addresses, s.ingester_category_source
    FROM li_run_new s
    CROSS JOIN LATERAL (SELECT 1 FROM job j WHERE j.job_id = s.job_id LIMIT 1) parent
    LEFT JOIN LATERAL (SELECT true AS found FROM job_run r WHERE r.run_id = s.run_id LIMIT 1) e ON true
    WHERE e.found IS NULL
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
)
SELECT s.run_id FROM li_run_new s WHERE s.run_id NOT IN (SELECT run_id FROM inserted)";

/// The guarded merge of staged deltas into stored `job_run` rows (`run_merge!`). Any state other than LEASED (11),
/// PENDING (1) and RUNNING (2) counts as ended and absorbs. Stored rows are reached by primary-key probes driven
/// from the staging rows (see `job.rs` on plans).
pub const UPDATE: &str = concat!(
    "
WITH cur AS (
    SELECT r.run_id, r.job_run_state, r.pending, r.started, r.finished, r.node, r.exit_code, r.error, r.debug,
           r.failure_category, r.failure_subcategory, r.scheduler_termination_reason, r.ingress_addresses,
           r.ingester_category_source,
           r.job_run_state NOT IN (11, 1, 2) AS ended,
           CASE r.job_run_state WHEN 11 THEN 0 WHEN 1 THEN 1 WHEN 2 THEN 2 ELSE -1 END AS rank
    FROM (SELECT run_id FROM li_run_update ORDER BY run_id) k
    CROSS JOIN LATERAL (SELECT * FROM job_run WHERE job_run.run_id = k.run_id FOR UPDATE) r
),",
    run_merge!(),
    "
UPDATE job_run r SET
    job_run_state = n.new_state,
    pending = n.new_pending,
    started = n.new_started,
    finished = n.new_finished,
    node = n.new_node,
    exit_code = n.new_exit_code,
    error = n.new_error,
    debug = n.new_debug,
    failure_category = n.new_category,
    failure_subcategory = n.new_subcategory,
    scheduler_termination_reason = n.new_termination_reason,
    ingress_addresses = n.new_ingress,
    ingester_category_source = n.new_category_source
FROM n
WHERE r.run_id = n.key
  AND (r.job_run_state IS DISTINCT FROM n.new_state OR r.pending IS DISTINCT FROM n.new_pending
    OR r.started IS DISTINCT FROM n.new_started OR r.finished IS DISTINCT FROM n.new_finished
    OR r.node IS DISTINCT FROM n.new_node OR r.exit_code IS DISTINCT FROM n.new_exit_code
    OR r.error IS DISTINCT FROM n.new_error OR r.debug IS DISTINCT FROM n.new_debug
    OR r.failure_category IS DISTINCT FROM n.new_category OR r.failure_subcategory IS DISTINCT FROM n.new_subcategory
    OR r.scheduler_termination_reason IS DISTINCT FROM n.new_termination_reason
    OR r.ingress_addresses IS DISTINCT FROM n.new_ingress
    OR r.ingester_category_source IS DISTINCT FROM n.new_category_source)"
);

/// Encodes the new runs' keys for [`COPY_NEW_KEYS`].
pub fn copy_keys<'a>(runs: impl Iterator<Item = &'a RunRow>) -> CopyWriter {
    let mut w = CopyWriter::new(2);
    for r in runs {
        w.row().text(&r.run_id).text(&r.job_id);
    }
    w
}

/// Encodes the new runs, settled (`changes::settle`), for [`COPY_NEW`] and [`COPY_DIRECT`].
pub fn copy_new<'a>(runs: impl Iterator<Item = SettledRun<'a>>) -> CopyWriter {
    let mut w = CopyWriter::new(18);
    for s in runs {
        let r = s.row;
        w.row()
            .text(&r.run_id)
            .text(&r.job_id)
            .text(&r.cluster)
            .opt_text(s.node)
            .ts(r.leased)
            .opt_text(r.pool.as_deref())
            .int2(s.state)
            .opt_ts(s.pending)
            .opt_ts(s.started)
            .opt_ts(s.finished)
            .opt_int4(s.exit_code)
            .opt_bytes(s.error)
            .opt_bytes(s.debug)
            .opt_text(s.category)
            .opt_text(s.subcategory)
            .opt_jsonb(s.termination_reason)
            .opt_jsonb(s.ingress.as_deref())
            .opt_text(s.category_source);
    }
    w
}

/// Encodes the run deltas for [`COPY_UPDATE`].
pub fn copy_update<'a>(deltas: impl Iterator<Item = (&'a String, &'a RunDelta)>) -> CopyWriter {
    let mut w = CopyWriter::new(20);
    for (run_id, d) in deltas {
        let e = d.end.as_ref();
        let ingress = if d.ingress.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&d.ingress).expect("a string map always serialises"))
        };
        w.row()
            .text(run_id)
            .opt_int2(d.active_state)
            .opt_ts(d.pending)
            .opt_ts(d.started)
            .opt_text(d.running_node.as_deref())
            .opt_int2(e.map(|e| e.state))
            .opt_ts(e.and_then(|e| e.at))
            .opt_int4(e.and_then(|e| e.exit_code))
            .opt_bytes(e.and_then(|e| e.error.as_deref()))
            .opt_text(e.and_then(|e| e.node.as_deref()))
            .opt_jsonb(e.and_then(|e| e.termination_reason.as_deref()))
            .opt_text(e.and_then(|e| e.category.as_deref()))
            .opt_text(e.and_then(|e| e.subcategory.as_deref()))
            .opt_text(d.late_category.as_deref())
            .opt_text(d.late_subcategory.as_deref())
            .opt_bytes(d.nonterminal_error.as_deref())
            .opt_bytes(d.error_debug.as_deref())
            .opt_bytes(d.info_debug.as_deref())
            .opt_jsonb(ingress.as_deref())
            .opt_text(e.and_then(|e| e.category_source));
    }
    w
}
