//! Retention: `lookout-ingester prune --older-than 14d` deletes terminal jobs (SUCCEEDED, FAILED, CANCELLED,
//! PREEMPTED, REJECTED) whose last transition is older than the retention, with their runs, spec, error and our
//! sanitized-value records, in bounded batches; also run periodically by the service (`analytics.prune_interval`).
//!
//! # Safe beside the writer
//! Each batch is one short transaction that never waits for a row lock:
//! 1. candidates are read in `(last_transition_time, job_id)` order from `idx_job_ltt_jobid` (keyset pagination:
//!    each batch starts after the previous one, so the scan never re-walks what it passed) and locked
//!    `FOR UPDATE SKIP LOCKED` — a job the writer is updating right now is skipped, never waited for;
//! 2. their runs are locked `FOR UPDATE SKIP LOCKED` too; a job with a run the writer holds is dropped from the
//!    batch (its job lock is released at commit) and left for the next prune;
//! 3. the rows are deleted, all locks being ours already.
//!
//! The writer locks `job` rows and then `job_run` rows (store::job / store::job_run, `FOR UPDATE`); the pruner
//! holds locks only on rows it took without waiting, so no wait-for cycle can form between them. A `lock_timeout`
//! guards the rest (a DDL, an operator's long transaction): a batch that hits it, or any transient error, is
//! rolled back and retried. Events that arrive later for a job already pruned find no row: they are parked like
//! any event whose job is unknown (`lookout_ingester.parked_event`). A new run for a job being pruned (which
//! Armada does not send for a terminal job) could still be inserted after its job is gone.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDateTime;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::AnalyticsConfig;

/// Jobs per batch unless told otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 5_000;
/// How long a batch may wait for a lock before it is rolled back and retried.
const LOCK_TIMEOUT: &str = "2s";
/// Attempts per batch on transient errors (lock timeout, deadlock, serialization, connection).
const ATTEMPTS: u32 = 5;

/// What to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub older_than: Duration,
    pub batch_size: usize,
    pub dry_run: bool,
}

/// Rows deleted (or, for a dry run, that would be).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneCounts {
    pub jobs: u64,
    pub runs: u64,
    pub specs: u64,
    pub errors: u64,
}

/// The outcome of one prune.
#[derive(Debug, Clone)]
pub struct PruneReport {
    /// Cut-off (UTC): jobs whose last transition is before it were eligible.
    pub cutoff: NaiveDateTime,
    pub dry_run: bool,
    pub deleted: PruneCounts,
    pub batches: u64,
    /// Eligible jobs left alone this time because the writer held one of their rows.
    pub skipped_busy: u64,
    pub elapsed: Duration,
}

impl PruneReport {
    pub fn jobs_per_second(&self) -> f64 {
        self.deleted.jobs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The final line of the command.
    pub fn summary(&self) -> String {
        let c = &self.deleted;
        if self.dry_run {
            return format!(
                "dry run: would delete {} jobs, {} runs, {} specs, {} errors (last transition before {} UTC)",
                c.jobs, c.runs, c.specs, c.errors, self.cutoff
            );
        }
        format!(
            "pruned {} jobs, {} runs, {} specs, {} errors (last transition before {} UTC) in {} batches, {:.1} s \
             ({:.0} jobs/s); {} busy jobs left for next time",
            c.jobs,
            c.runs,
            c.specs,
            c.errors,
            self.cutoff,
            self.batches,
            self.elapsed.as_secs_f64(),
            self.jobs_per_second(),
            self.skipped_busy
        )
    }
}

const CUTOFF: &str = "SELECT (now() AT TIME ZONE 'UTC') - make_interval(secs => $1)";

/// What a dry run reports: the eligible jobs and their rows.
const DRY_RUN: &str = "
WITH v AS (SELECT job_id FROM job WHERE last_transition_time < $1 AND state IN (4, 5, 6, 7, 9))
SELECT (SELECT count(*) FROM v),
       (SELECT count(*) FROM job_run r WHERE r.job_id IN (SELECT job_id FROM v)),
       (SELECT count(*) FROM job_spec s WHERE s.job_id IN (SELECT job_id FROM v)),
       (SELECT count(*) FROM job_error e WHERE e.job_id IN (SELECT job_id FROM v))";

/// The next batch of eligible jobs after the keyset position, locked without waiting.
const CANDIDATES: &str = "
SELECT job_id, last_transition_time FROM job
WHERE last_transition_time < $1
  AND (last_transition_time, job_id) > ($2, $3)
  AND state IN (4, 5, 6, 7, 9)
ORDER BY last_transition_time, job_id
LIMIT $4
FOR UPDATE SKIP LOCKED";

/// Locks the candidates' runs without waiting; returns the jobs having a run that could not be locked.
const BUSY: &str = "
WITH locked AS (
    SELECT run_id FROM job_run WHERE job_id = ANY($1) FOR UPDATE SKIP LOCKED
)
SELECT DISTINCT r.job_id FROM job_run r
WHERE r.job_id = ANY($1) AND r.run_id NOT IN (SELECT run_id FROM locked)";

/// Deletes the jobs and everything keyed by their ids.
const DELETE: &str = "
WITH r AS (DELETE FROM job_run WHERE job_id = ANY($1) RETURNING 1),
     s AS (DELETE FROM job_spec WHERE job_id = ANY($1) RETURNING 1),
     e AS (DELETE FROM job_error WHERE job_id = ANY($1) RETURNING 1),
     v AS (DELETE FROM lookout_ingester.sanitized_value WHERE job_id = ANY($1) RETURNING 1),
     j AS (DELETE FROM job WHERE job_id = ANY($1) RETURNING 1)
SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM r), (SELECT count(*) FROM s), (SELECT count(*) FROM e),
       (SELECT count(*) FROM v)";

/// Progress after each batch: running totals and the elapsed time.
pub struct Progress<'a> {
    pub deleted: &'a PruneCounts,
    pub batches: u64,
    pub elapsed: Duration,
}

/// Prunes until no eligible job is left behind the keyset (or `cancel` fires between batches).
pub async fn prune(
    pool: &PgPool,
    opts: &PruneOptions,
    cancel: Option<&CancellationToken>,
    mut progress: impl FnMut(&Progress<'_>),
) -> anyhow::Result<PruneReport> {
    let start = Instant::now();
    let mut conn = pool.acquire().await.context("cannot connect to Postgres")?;
    let cutoff: NaiveDateTime =
        sqlx::query_scalar(CUTOFF).bind(opts.older_than.as_secs_f64()).fetch_one(&mut *conn).await?;
    let mut report = PruneReport {
        cutoff,
        dry_run: opts.dry_run,
        deleted: PruneCounts::default(),
        batches: 0,
        skipped_busy: 0,
        elapsed: Duration::ZERO,
    };
    if opts.dry_run {
        let (jobs, runs, specs, errors): (i64, i64, i64, i64) =
            sqlx::query_as(DRY_RUN).bind(cutoff).fetch_one(&mut *conn).await?;
        report.deleted =
            PruneCounts { jobs: jobs as u64, runs: runs as u64, specs: specs as u64, errors: errors as u64 };
        report.elapsed = start.elapsed();
        return Ok(report);
    }
    let batch_size = opts.batch_size.max(1) as i64;
    // Before any timestamp Armada writes (and within Postgres' range, unlike NaiveDateTime::MIN).
    let mut after =
        (chrono::NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date").and_time(chrono::NaiveTime::MIN), String::new());
    loop {
        if cancel.is_some_and(|c| c.is_cancelled()) {
            break;
        }
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match batch(&mut conn, cutoff, &after, batch_size).await {
                Ok(o) => break o,
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    tracing::warn!(error = %e, attempt, "prune batch rolled back; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e).context("prune batch failed"),
            }
        };
        let Some(last) = outcome.last else { break };
        after = last;
        report.batches += 1;
        report.skipped_busy += outcome.busy;
        let d = &mut report.deleted;
        d.jobs += outcome.counts.jobs;
        d.runs += outcome.counts.runs;
        d.specs += outcome.counts.specs;
        d.errors += outcome.counts.errors;
        progress(&Progress { deleted: &report.deleted, batches: report.batches, elapsed: start.elapsed() });
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

struct BatchOutcome {
    /// Keyset position reached (`None`: nothing eligible left).
    last: Option<(NaiveDateTime, String)>,
    counts: PruneCounts,
    busy: u64,
}

async fn batch(
    conn: &mut PgConnection,
    cutoff: NaiveDateTime,
    after: &(NaiveDateTime, String),
    limit: i64,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).execute(&mut *tx).await?;
    let candidates: Vec<(String, NaiveDateTime)> =
        sqlx::query_as(CANDIDATES).bind(cutoff).bind(after.0).bind(&after.1).bind(limit).fetch_all(&mut *tx).await?;
    let Some((last_id, last_ltt)) = candidates.last().cloned() else {
        tx.rollback().await?;
        return Ok(BatchOutcome { last: None, counts: PruneCounts::default(), busy: 0 });
    };
    let mut ids: Vec<String> = candidates.into_iter().map(|(id, _)| id).collect();
    let busy: Vec<String> = sqlx::query_scalar(BUSY).bind(&ids).fetch_all(&mut *tx).await?;
    if !busy.is_empty() {
        ids.retain(|id| !busy.contains(id));
    }
    let (jobs, runs, specs, errors, _sanitized): (i64, i64, i64, i64, i64) =
        sqlx::query_as(DELETE).bind(&ids).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(BatchOutcome {
        last: Some((last_ltt, last_id)),
        counts: PruneCounts { jobs: jobs as u64, runs: runs as u64, specs: specs as u64, errors: errors as u64 },
        busy: busy.len() as u64,
    })
}

/// Lock timeout, deadlock, serialization failure, or a lost connection: worth another attempt.
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("55P03" | "40P01" | "40001" | "57014")) || {
                let code = d.code().unwrap_or_default();
                code.starts_with("08")
            }
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

/// The service's periodic prune (`analytics.prune_interval` > 0): prunes with `prune_older_than` every interval,
/// first one interval after start, until `cancel`.
pub async fn periodic(pool: PgPool, config: AnalyticsConfig, cancel: CancellationToken) {
    if config.prune_interval.is_zero() {
        return;
    }
    let opts =
        PruneOptions { older_than: config.prune_older_than, batch_size: config.prune_batch_size, dry_run: false };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.prune_interval) => {}
        }
        match prune(&pool, &opts, Some(&cancel), |_| {}).await {
            Ok(report) => tracing::info!(
                jobs = report.deleted.jobs,
                runs = report.deleted.runs,
                busy = report.skipped_busy,
                seconds = report.elapsed.as_secs_f64(),
                "periodic prune done"
            ),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "periodic prune failed; trying again next interval"),
        }
    }
}
