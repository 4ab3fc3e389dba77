//! Statistics: keeps the planner's view of `job` and `job_run` current while a writer fills them fast.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::{Executor, PgPool};

use crate::states::{Operation, RowsWritten, Table};

const ANALYZE_MIN_ROWS: u64 = 5_000;
const ANALYZE_GROWTH: f64 = 9.0;

/// The statistics the merges' plans depend on: the tables' sizes (`reltuples`, `relpages`: every ANALYZE updates
/// them) and the join keys. Analyzing only these columns costs a fraction of a whole-table ANALYZE, which computes
/// statistics for every text and jsonb column of Lookout's wide rows (0.7 s of Postgres CPU per 25 000 jobs);
/// autovacuum fills in the rest later, as it does for the reference.
const ANALYZE: &str = "ANALYZE job (job_id, latest_run_id); ANALYZE job_run (run_id, job_id)";

/// Rows this writer inserted into `job` and `job_run` since their statistics were last refreshed.
///
/// The merges reach stored rows by primary key, but the final `UPDATE … FROM` join is planned from the tables'
/// statistics. A table that was never analyzed (a database being rebuilt from the topic, faster than autovacuum
/// looks at it) is taken for a few pages, and the planner then scans all of it for every batch. Once analyzed, the
/// planner scales the known row density by the table's current size, so one ANALYZE is enough; the writer runs it
/// after [`ANALYZE_MIN_ROWS`] inserts, and again only after tenfold growth, outside the batch's transaction and in
/// the background (on the writer pool's spare connection). In a steady state it never runs.
#[derive(Debug, Default)]
pub(super) struct Growth {
    inserted: u64,
    baseline: Option<f64>,
    running: bool,
}

/// Starts a background ANALYZE of `job` and `job_run` when they have grown enough since the last look (see
/// [`Growth`]). Failures are logged, never fatal: autovacuum does the same job, only later.
pub(super) fn refresh(pool: &PgPool, stats: &Arc<Mutex<Growth>>, rows: &[RowsWritten]) {
    let inserted: u64 = rows
        .iter()
        .filter(|r| r.operation == Operation::Insert && matches!(r.table, Table::Job | Table::JobRun))
        .map(|r| r.rows)
        .sum();
    {
        let mut g = stats.lock().unwrap_or_else(|e| e.into_inner());
        g.inserted += inserted;
        let baseline = g.baseline.unwrap_or(0.0).max(0.0);
        if g.running || g.inserted < ANALYZE_MIN_ROWS || (g.inserted as f64) < baseline * ANALYZE_GROWTH {
            return;
        }
        g.running = true;
        g.inserted = 0;
    }
    let (pool, stats) = (pool.clone(), stats.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let result: sqlx::Result<f64> = async {
            let mut conn = pool.acquire().await?;
            conn.execute(ANALYZE).await?;
            let rows: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'job'::regclass")
                .fetch_one(&mut *conn)
                .await?;
            Ok(f64::from(rows))
        }
        .await;
        let mut g = stats.lock().unwrap_or_else(|e| e.into_inner());
        g.running = false;
        match result {
            Ok(rows) => {
                g.baseline = Some(rows);
                tracing::info!(job_rows = rows, took = ?started.elapsed(), "refreshed job and job_run statistics");
            }
            Err(e) => {
                // Back off so a failing ANALYZE (e.g. not the table owner) is not retried every batch.
                g.baseline = Some(g.baseline.unwrap_or(0.0).max(1.0) * 2.0);
                tracing::warn!(error = %e, "could not analyze job and job_run; relying on autovacuum");
            }
        }
    });
}
