//! All SQL for the `job` table: its staging tables, the writes of new jobs and the guarded update of stored ones.
//!
//! New jobs, settled in memory (`changes::settle`), are COPYed straight into `job` ([`COPY_DIRECT`]; [`INSERT`] is
//! the fallback, see `store::new_rows`); the update applies the job rules of `docs/precedence.md` to stored rows
//! (`job_merge!`, reading the `leased` time of the runs involved) and writes only rows that change. Updates the writer
//! merged in memory (`changes::known`) are written first by compare-and-set ([`CAS`]); only those whose row changed
//! meanwhile reach the merge.
//!
//! Plans: the stored rows are read and locked by primary-key probes driven from the staging rows (LATERAL), so
//! that part costs the same on an empty table and on one of millions of rows; the final `UPDATE … FROM` join is left
//! to the planner, whose statistics the store keeps fresh while tables grow fast (`store::Growth`).

use std::collections::BTreeSet;

use crate::changes::JobDelta;
use crate::changes::known::KnownJob;
use crate::changes::settle::SettledJob;

use super::copy::CopyWriter;

/// Per-connection staging tables (emptied at commit).
pub const STAGING: &str = "
CREATE TEMP TABLE IF NOT EXISTS li_job_new (
    job_id text, queue text, owner text, jobset text, cpu bigint, memory bigint, ephemeral_storage bigint,
    gpu bigint, priority bigint, submitted timestamp, state smallint, last_transition_time timestamp,
    last_transition_time_seconds bigint, priority_class text, namespace text, annotations jsonb,
    external_job_uri text, ingester_priority_at timestamp, latest_run_id text, cancelled timestamp,
    cancel_reason text, cancel_user text, ingester_failure_category text, ingester_failure_subcategory text,
    ingester_failure_reason text, ingester_failure_message text, ingester_retry_policy text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS li_job_update (
    job_id text PRIMARY KEY, priority bigint, priority_at timestamp,
    term_state smallint, term_at timestamp, cancelled timestamp, cancel_reason text, cancel_user text,
    term_category text, term_subcategory text, term_reason text, term_message text, term_retry_policy text,
    pre_at timestamp, pre_category text, pre_subcategory text, pre_reason text, pre_message text,
    pre_retry_policy text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS li_job_progress (
    job_id text, run_id text, phase smallint, at timestamp
) ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS li_job_progress_job_id ON li_job_progress (job_id);
CREATE TEMP TABLE IF NOT EXISTS li_job_cas (
    job_id text,
    was_state smallint, was_ltt timestamp, was_latest_run_id text, was_priority bigint, was_priority_at timestamp,
    was_cancelled timestamp, was_cancel_reason text, was_cancel_user text, was_category text, was_subcategory text,
    was_reason text, was_message text, was_retry_policy text,
    state smallint, ltt timestamp, ltt_seconds bigint, latest_run_id text, priority bigint, priority_at timestamp,
    cancelled timestamp, cancel_reason text, cancel_user text, category text, subcategory text, reason text,
    message text, retry_policy text
) ON COMMIT DELETE ROWS;
";

pub const COPY_NEW: &str = "COPY li_job_new FROM STDIN (FORMAT binary)";
/// The keys alone, for deciding orphans and which new jobs exist already (`store::new_rows`).
pub const COPY_NEW_KEYS: &str = "COPY li_job_new (job_id) FROM STDIN (FORMAT binary)";
/// New jobs straight into `job`, with the columns of [`copy_new`] (the staging table's, in its order).
pub const COPY_DIRECT: &str = "COPY job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority,
    submitted, state, last_transition_time, last_transition_time_seconds, priority_class, namespace, annotations,
    external_job_uri, ingester_priority_at, latest_run_id, cancelled, cancel_reason, cancel_user,
    ingester_failure_category, ingester_failure_subcategory, ingester_failure_reason, ingester_failure_message,
    ingester_retry_policy) FROM STDIN (FORMAT binary)";
pub const COPY_UPDATE: &str = "COPY li_job_update FROM STDIN (FORMAT binary)";
pub const COPY_PROGRESS: &str = "COPY li_job_progress FROM STDIN (FORMAT binary)";
pub const COPY_CAS: &str = "COPY li_job_cas FROM STDIN (FORMAT binary)";

/// Compare-and-set of jobs whose stored columns the writer knows (`changes::known`): each staged row of
/// `li_job_cas` carries the columns as the writer last wrote them (`was_*`) and as the job merge leaves them. A row
/// is written only if every column the merge reads still holds its `was_*` value; returns the jobs written. The
/// others (changed by someone else meanwhile, or gone) go through [`UPDATE`], which reads them.
pub const CAS: &str = "
UPDATE job j SET
    state = s.state,
    last_transition_time = s.ltt,
    last_transition_time_seconds = COALESCE(s.ltt_seconds, j.last_transition_time_seconds),
    latest_run_id = s.latest_run_id,
    priority = s.priority,
    ingester_priority_at = s.priority_at,
    cancelled = s.cancelled,
    cancel_reason = s.cancel_reason,
    cancel_user = s.cancel_user,
    ingester_failure_category = s.category,
    ingester_failure_subcategory = s.subcategory,
    ingester_failure_reason = s.reason,
    ingester_failure_message = s.message,
    ingester_retry_policy = s.retry_policy
FROM li_job_cas s
WHERE j.job_id = s.job_id
  AND j.state = s.was_state
  AND j.last_transition_time IS NOT DISTINCT FROM s.was_ltt
  AND j.latest_run_id IS NOT DISTINCT FROM s.was_latest_run_id
  AND j.priority IS NOT DISTINCT FROM s.was_priority
  AND j.ingester_priority_at IS NOT DISTINCT FROM s.was_priority_at
  AND j.cancelled IS NOT DISTINCT FROM s.was_cancelled
  AND j.cancel_reason IS NOT DISTINCT FROM s.was_cancel_reason
  AND j.cancel_user IS NOT DISTINCT FROM s.was_cancel_user
  AND j.ingester_failure_category IS NOT DISTINCT FROM s.was_category
  AND j.ingester_failure_subcategory IS NOT DISTINCT FROM s.was_subcategory
  AND j.ingester_failure_reason IS NOT DISTINCT FROM s.was_reason
  AND j.ingester_failure_message IS NOT DISTINCT FROM s.was_message
  AND j.ingester_retry_policy IS NOT DISTINCT FROM s.was_retry_policy
RETURNING j.job_id";

/// One failure-detail column of the job merge: a preemption's value, else a terminal update's, else the current
/// one (an absent value never clears a stored one). `$field` is the staged column after `pre_` / `term_`.
macro_rules! failure_column {
    ($field:literal, $stored:literal, $new:literal) => {
        concat!(
            "        CASE WHEN d.apply_preemption THEN COALESCE(d.pre_",
            $field,
            ", d.",
            $stored,
            ")
             WHEN d.apply_terminal THEN COALESCE(d.term_",
            $field,
            ", d.",
            $stored,
            ")
             ELSE d.",
            $stored,
            " END AS ",
            $new,
            ",\n"
        )
    };
}

/// The decision of the job merge (docs/precedence.md, job rules 2–6), as the CTEs `d` and `n`, which follow a CTE
/// `cur` of current rows (`job_id`, the job columns the rules read, `cur_leased`, `cur_phase`, `terminal`).
///
/// * `d`: per job, the staged update and the furthest progress point among the batch's candidates, ordered by
///   (leased time of the run, run id, phase), run ids byte by byte (`COLLATE "C"`, as `changes::settle` compares
///   them); a requeue without a run refers to the current latest run, if it is not older than that run's lease. Which parts apply: terminal 7/9 absorb every state change; 4/5/6 accept
///   only a preemption; an active job takes the batch's first terminal update if any (after its progress), else
///   the progress point if it lies beyond the current one; priority applies to active jobs when not older than the
///   current one. A terminal job's `latest_run_id` still follows a newer run (`follow_run`), so that it does not
///   depend on whether a run's events arrive before or after the job's end.
/// * `n`: `d`'s columns, the new value of every column the merge writes, and whether anything changes.
///
/// The `LIMIT 1` on the probes (of the staged update and of runs; each is by key, so it changes no result) keeps
/// the planner from flattening them into joins, which it may then run as a scan per staged job: quadratic, and
/// seen taking 90% of a batch (the staging tables have no statistics; `job_run` has stale ones while young).
macro_rules! job_merge {
    () => {
        concat!(
            "
d AS (
    SELECT c.*,
           u.priority AS u_priority, u.priority_at AS u_priority_at,
           u.term_state, u.term_at, u.cancelled AS u_cancelled, u.cancel_reason AS u_cancel_reason,
           u.cancel_user AS u_cancel_user, u.term_category, u.term_subcategory, u.term_reason, u.term_message,
           u.term_retry_policy, u.pre_at, u.pre_category, u.pre_subcategory, u.pre_reason, u.pre_message,
           u.pre_retry_policy,
           b.run_id AS b_run_id, b.phase AS b_phase, b.at AS b_at,
           (NOT c.terminal AND u.term_state IS NOT NULL) AS apply_terminal,
           (c.state IN (4, 5, 6) AND u.pre_at IS NOT NULL) AS apply_preemption,
           (NOT c.terminal AND b.phase IS NOT NULL
              AND (COALESCE(b.run_leased, '-infinity'::timestamp), COALESCE(b.run_id, '') COLLATE \"C\", b.phase)
                > (COALESCE(c.cur_leased, '-infinity'::timestamp), COALESCE(c.latest_run_id, ''), c.cur_phase))
             AS apply_progress,
           (c.terminal AND b.run_id IS NOT NULL
              AND (COALESCE(b.run_leased, '-infinity'::timestamp), b.run_id COLLATE \"C\")
                > (COALESCE(c.cur_leased, '-infinity'::timestamp), COALESCE(c.latest_run_id, '')))
             AS follow_run,
           (NOT c.terminal AND u.priority IS NOT NULL
              AND (c.ingester_priority_at IS NULL OR u.priority_at >= c.ingester_priority_at)) AS apply_priority
    FROM cur c
    LEFT JOIN LATERAL (SELECT * FROM li_job_update x WHERE x.job_id = c.job_id LIMIT 1) u ON true
    LEFT JOIN LATERAL (
        SELECT COALESCE(p.run_id, c.latest_run_id) AS run_id, p.phase, p.at, r.leased AS run_leased
        FROM li_job_progress p
        LEFT JOIN LATERAL (
            SELECT jr.leased FROM job_run jr WHERE jr.run_id = COALESCE(p.run_id, c.latest_run_id) LIMIT 1
        ) r ON true
        WHERE p.job_id = c.job_id
          -- A requeue without a run in the batch belongs to the current latest run only if it is not older than
          -- that run's lease (a redelivered requeue of an earlier run must not requeue the current one).
          AND (p.run_id IS NOT NULL OR r.leased IS NULL OR p.at >= r.leased)
        ORDER BY r.leased DESC NULLS LAST, COALESCE(p.run_id, c.latest_run_id) COLLATE \"C\" DESC NULLS LAST,
                 p.phase DESC
        LIMIT 1
    ) b ON true
), n AS (
    SELECT d.*, d.job_id AS key,
        CASE WHEN d.apply_preemption THEN 7::smallint
             WHEN d.apply_terminal THEN d.term_state
             WHEN d.apply_progress THEN (CASE d.b_phase WHEN 1 THEN 8 WHEN 2 THEN 2 WHEN 3 THEN 3 ELSE 1 END)::smallint
             ELSE d.state END AS new_state,
        CASE WHEN d.apply_preemption THEN d.pre_at
             WHEN d.apply_terminal THEN d.term_at
             WHEN d.apply_progress THEN d.b_at END AS new_ltt,
        CASE WHEN d.apply_progress OR d.follow_run THEN COALESCE(d.b_run_id, d.latest_run_id)
             ELSE d.latest_run_id END AS new_latest,
        CASE WHEN d.apply_priority THEN d.u_priority ELSE d.priority END AS new_priority,
        CASE WHEN d.apply_priority THEN d.u_priority_at ELSE d.ingester_priority_at END AS new_priority_at,
        CASE WHEN d.apply_terminal THEN COALESCE(d.u_cancelled, d.cancelled) ELSE d.cancelled END AS new_cancelled,
        CASE WHEN d.apply_terminal THEN COALESCE(d.u_cancel_reason, d.cancel_reason) ELSE d.cancel_reason END
            AS new_cancel_reason,
        CASE WHEN d.apply_terminal THEN COALESCE(d.u_cancel_user, d.cancel_user) ELSE d.cancel_user END
            AS new_cancel_user,
",
            failure_column!("category", "ingester_failure_category", "new_f_category"),
            failure_column!("subcategory", "ingester_failure_subcategory", "new_f_subcategory"),
            failure_column!("reason", "ingester_failure_reason", "new_f_reason"),
            failure_column!("message", "ingester_failure_message", "new_f_message"),
            failure_column!("retry_policy", "ingester_retry_policy", "new_retry_policy"),
            "
        (d.apply_preemption OR d.apply_terminal OR d.apply_progress OR d.follow_run OR d.apply_priority) AS changes
    FROM d
)"
        )
    };
}

/// The fallback of [`COPY_DIRECT`] (`store::new_rows`): inserts the staged new jobs unless they exist. Returns the
/// staged jobs that were *not* inserted: they exist already (one a concurrent lane committed first), and their
/// deltas are staged for [`UPDATE`] instead.
///
/// The existence probe is by key (LATERAL, never a join the planner could run as a scan of `job`) and also covers
/// Lookout's hot/cold variant, whose primary key is `(job_id, state)` (docs/compatibility.md §3.8).
pub const INSERT: &str = "
WITH inserted AS (
    INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                     last_transition_time, last_transition_time_seconds, priority_class, namespace, annotations,
                     external_job_uri, ingester_priority_at, latest_run_id, cancelled, cancel_reason, cancel_user,
                     ingester_failure_category, ingester_failure_subcategory, ingester_failure_reason,
                     ingester_failure_message, ingester_retry_policy)
    SELECT s.job_id, s.queue, s.owner, s.jobset, s.cpu, s.memory, s.ephemeral_storage, s.gpu, s.priority,
           s.submitted, s.state, s.last_transition_time, s.last_transition_time_seconds, s.priority_class,
           s.namespace, s.annotations, s.external_job_uri, s.ingester_priority_at, s.latest_run_id, s.cancelled,
           s.cancel_reason, s.cancel_user, s.ingester_failure_category, s.ingester_failure_subcategory,
           s.ingester_failure_reason, s.ingester_failure_message, s.ingester_retry_policy
    FROM li_job_new s
    LEFT JOIN LATERAL (SELECT true AS found FROM job j WHERE j.job_id = s.job_id LIMIT 1) e ON true
    WHERE e.found IS NULL
    ON CONFLICT DO NOTHING
    RETURNING job_id
)
SELECT s.job_id FROM li_job_new s WHERE s.job_id NOT IN (SELECT job_id FROM inserted)";

/// The guarded merge of staged deltas into stored `job` rows (docs/precedence.md, job rules 2–6; see
/// `job_merge!`). `cur`: the stored rows of the batch's jobs, locked, each with its own progress point (the
/// `leased` time of its latest run, that run, and the phase its state implies). The runs this batch inserts are in
/// `job_run` by now.
///
/// Every stored row is read by a primary-key probe driven from the staging rows (LATERAL), whatever the
/// statistics say.
pub const UPDATE: &str = concat!(
    "
WITH keys AS (
    SELECT job_id FROM li_job_update UNION SELECT job_id FROM li_job_progress ORDER BY job_id
), cur AS (
    SELECT j.job_id, j.state, j.latest_run_id, j.priority, j.ingester_priority_at, j.cancelled, j.cancel_reason,
           j.cancel_user, j.ingester_failure_category, j.ingester_failure_subcategory, j.ingester_failure_reason,
           j.ingester_failure_message, j.ingester_retry_policy,
           lr.leased AS cur_leased,
           CASE j.state WHEN 8 THEN 1 WHEN 2 THEN 2 WHEN 3 THEN 3
                        WHEN 1 THEN CASE WHEN j.latest_run_id IS NULL THEN 0 ELSE 4 END
                        ELSE 0 END AS cur_phase,
           j.state IN (4, 5, 6, 7, 9) AS terminal
    FROM keys k
    CROSS JOIN LATERAL (SELECT * FROM job WHERE job.job_id = k.job_id FOR UPDATE) j
    LEFT JOIN LATERAL (SELECT r.leased FROM job_run r WHERE r.run_id = j.latest_run_id LIMIT 1) lr ON true
),",
    job_merge!(),
    "
UPDATE job j SET
    state = n.new_state,
    last_transition_time = COALESCE(n.new_ltt, j.last_transition_time),
    last_transition_time_seconds =
        COALESCE(floor(extract(epoch FROM n.new_ltt))::bigint, j.last_transition_time_seconds),
    latest_run_id = n.new_latest,
    priority = n.new_priority,
    ingester_priority_at = n.new_priority_at,
    cancelled = n.new_cancelled,
    cancel_reason = n.new_cancel_reason,
    cancel_user = n.new_cancel_user,
    ingester_failure_category = n.new_f_category,
    ingester_failure_subcategory = n.new_f_subcategory,
    ingester_failure_reason = n.new_f_reason,
    ingester_failure_message = n.new_f_message,
    ingester_retry_policy = n.new_retry_policy
FROM n
WHERE j.job_id = n.key AND n.changes"
);

/// Encodes the new jobs' keys for [`COPY_NEW_KEYS`].
pub fn copy_keys<'a>(job_ids: impl Iterator<Item = &'a String>) -> CopyWriter {
    let mut w = CopyWriter::new(1);
    for id in job_ids {
        w.row().text(id);
    }
    w
}

/// Encodes the new jobs, settled (`changes::settle`), for [`COPY_NEW`] and [`COPY_DIRECT`].
pub fn copy_new<'a>(jobs: impl Iterator<Item = SettledJob<'a>>) -> CopyWriter {
    let mut w = CopyWriter::new(27);
    for s in jobs {
        let j = s.row;
        let f = s.failure;
        w.row()
            .text(&j.job_id)
            .text(&j.queue)
            .text(&j.owner)
            .text(&j.jobset)
            .int8(j.cpu)
            .int8(j.memory)
            .int8(j.ephemeral_storage)
            .int8(j.gpu)
            .int8(s.priority)
            .ts(j.submitted)
            .int2(s.state)
            .ts(s.last_transition_time)
            .int8(s.last_transition_time.div_euclid(1_000_000))
            .opt_text(j.priority_class.as_deref())
            .text(&j.namespace)
            .opt_jsonb(Some(&j.annotations))
            .text(&j.external_job_uri)
            .ts(s.priority_at)
            .opt_text(s.latest_run_id)
            .opt_ts(s.cancelled)
            .opt_text(s.cancel_reason)
            .opt_text(s.cancel_user)
            .opt_text(f.and_then(|f| f.category.as_deref()))
            .opt_text(f.and_then(|f| f.subcategory.as_deref()))
            .opt_text(f.and_then(|f| f.reason.as_deref()))
            .opt_text(f.and_then(|f| f.message.as_deref()))
            .opt_text(f.and_then(|f| f.retry_policy.as_deref()));
    }
    w
}

/// Encodes the job deltas for [`COPY_UPDATE`] (one row per job with a priority, terminal or preemption part).
pub fn copy_update<'a>(deltas: impl Iterator<Item = (&'a String, &'a JobDelta)>) -> CopyWriter {
    let mut w = CopyWriter::new(19);
    for (job_id, d) in deltas {
        if d.priority.is_none() && d.terminal.is_none() && d.preempted.is_none() {
            continue;
        }
        let t = d.terminal.as_ref();
        let tf = t.map(|t| &t.failure);
        let p = d.preempted.as_ref();
        let pf = p.map(|p| &p.failure);
        w.row()
            .text(job_id)
            .opt_int8(d.priority.map(|(p, _)| p))
            .opt_ts(d.priority.map(|(_, at)| at))
            .opt_int2(t.map(|t| t.state))
            .opt_ts(t.map(|t| t.at))
            .opt_ts(t.and_then(|t| t.cancelled))
            .opt_text(t.and_then(|t| t.cancel_reason.as_deref()))
            .opt_text(t.and_then(|t| t.cancel_user.as_deref()))
            .opt_text(tf.and_then(|f| f.category.as_deref()))
            .opt_text(tf.and_then(|f| f.subcategory.as_deref()))
            .opt_text(tf.and_then(|f| f.reason.as_deref()))
            .opt_text(tf.and_then(|f| f.message.as_deref()))
            .opt_text(tf.and_then(|f| f.retry_policy.as_deref()))
            .opt_ts(p.map(|p| p.at))
            .opt_text(pf.and_then(|f| f.category.as_deref()))
            .opt_text(pf.and_then(|f| f.subcategory.as_deref()))
            .opt_text(pf.and_then(|f| f.reason.as_deref()))
            .opt_text(pf.and_then(|f| f.message.as_deref()))
            .opt_text(pf.and_then(|f| f.retry_policy.as_deref()));
    }
    w
}

/// Encodes the progress candidates for [`COPY_PROGRESS`], leaving out points that name a run in `skip_runs` (runs
/// that do not exist: their events are parked).
pub fn copy_progress<'a>(
    deltas: impl Iterator<Item = (&'a String, &'a JobDelta)>,
    skip_runs: &BTreeSet<&str>,
) -> CopyWriter {
    let mut w = CopyWriter::new(4);
    for (job_id, d) in deltas {
        for p in &d.progress {
            if p.run_id.as_deref().is_some_and(|r| skip_runs.contains(&r)) {
                continue;
            }
            w.row().text(job_id).opt_text(p.run_id.as_deref()).int2(p.phase as i16).ts(p.at);
        }
    }
    w
}

/// One job for [`CAS`]: its id, its columns as known (`was`) and as the merge leaves them (`new`).
pub struct CasRow<'a> {
    pub job_id: &'a str,
    pub was: &'a KnownJob,
    pub new: &'a KnownJob,
}

/// Encodes compare-and-set rows for [`COPY_CAS`].
pub fn copy_cas<'a>(rows: impl Iterator<Item = &'a CasRow<'a>>) -> CopyWriter {
    fn rest(w: &mut CopyWriter, k: &KnownJob) {
        w.opt_text(k.latest_run_id.as_deref())
            .int8(k.priority)
            .opt_ts(k.priority_at)
            .opt_ts(k.cancelled)
            .opt_text(k.cancel_reason.as_deref())
            .opt_text(k.cancel_user.as_deref())
            .opt_text(k.failure.category.as_deref())
            .opt_text(k.failure.subcategory.as_deref())
            .opt_text(k.failure.reason.as_deref())
            .opt_text(k.failure.message.as_deref())
            .opt_text(k.failure.retry_policy.as_deref());
    }
    let mut w = CopyWriter::new(28);
    for CasRow { job_id, was, new } in rows {
        w.row().text(job_id).int2(was.state).ts(was.last_transition_time);
        rest(&mut w, was);
        // The merge sets the seconds only with a new transition time; otherwise the stored ones stay.
        let moved = new.last_transition_time != was.last_transition_time;
        w.int2(new.state)
            .ts(new.last_transition_time)
            .opt_int8(moved.then(|| new.last_transition_time.div_euclid(1_000_000)));
        rest(&mut w, new);
    }
    w
}
