//! Store: runs the SQL that writes row changes to Postgres, and nothing else. It knows tables, statements and
//! SQLSTATEs; what the rows mean, and which events they came from, is the writer's business (`crate::writer`).
//!
//! - `stage`: COPY (binary) a [`RowChanges`](crate::changes::RowChanges) into per-connection staging tables and
//!   insert and merge them with the set-based statements of `job`, `job_run`, `job_spec` and `job_error`;
//! - `orphans`: the one statement that takes staged rows lacking their parent job or run out of staging;
//! - `position`, `parked`, `quarantine`, `sanitized`: all SQL of the ingester's own tables;
//! - `retry`: jittered backoff around one transaction attempt; `error`: SQLSTATE classes (docs/compatibility.md D6);
//! - `statistics`: a background ANALYZE while the tables grow fast.
//!
//! [`Store`] owns the writer pool, whose connections carry the staging tables.

#[cfg(test)]
mod checks;
pub mod copy;
mod error;
pub mod job;
pub mod job_error;
pub mod job_run;
pub mod job_spec;
pub mod new_rows;
pub mod orphans;
pub mod parked;
pub mod position;
pub mod quarantine;
pub mod retry;
pub mod sanitized;
pub mod stage;
mod statistics;
mod unnest;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool, Postgres};

pub use error::{ErrorClass, StoreError, classify, sqlstate};

/// The writer pool. Its connections carry the staging tables.
pub struct Store {
    pool: PgPool,
    stats: Arc<Mutex<statistics::Growth>>,
}

impl Store {
    /// Builds the pool for `lanes` concurrent writers: one connection each, plus two spares (statistics refresh,
    /// the parked-event sweep, reconnects). Concurrent writes must touch disjoint partitions, as the pipeline's
    /// lanes do.
    pub fn connect_lazy(options: sqlx::postgres::PgConnectOptions, lanes: usize) -> Store {
        let pool = PgPoolOptions::new()
            .max_connections(lanes.max(1) as u32 + 2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET temp_buffers = '64MB'").await?;
                    for ddl in stage::STAGING {
                        conn.execute(*ddl).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Store { pool, stats: Default::default() }
    }

    /// A connection of the pool (begin a transaction on it for a batch).
    pub async fn acquire(&self) -> sqlx::Result<PoolConnection<Postgres>> {
        self.pool.acquire().await
    }

    /// After a commit that affected these rows: refreshes the planner statistics in the background when `job` and
    /// `job_run` have grown enough.
    pub fn refresh_statistics(&self, rows: &[crate::states::RowsWritten]) {
        statistics::refresh(&self.pool, &self.stats, rows);
    }

    /// The number of parked events (for the gauge).
    pub async fn parked_count(&self) -> sqlx::Result<i64> {
        let mut conn = self.pool.acquire().await?;
        parked::count(&mut conn).await
    }
}
