//! The migration lock: a session advisory lock ([`LOCK_KEY`]) held for a whole `migrate` run.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::report::db;
use super::{LOCK_KEY, MigrateError};

/// How often a waiting `migrate` retries the lock, and how often it says it is waiting.
const LOCK_POLL: Duration = Duration::from_millis(200);
const LOCK_LOG_EVERY: Duration = Duration::from_secs(10);

/// Takes the migration lock, polling (see the module docs for why it does not block in `pg_advisory_lock`).
pub(super) async fn lock(conn: &mut PgConnection) -> Result<(), MigrateError> {
    let start = Instant::now();
    let mut next_log = start + LOCK_LOG_EVERY;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *conn)
            .await
            .map_err(db("taking the migration lock"))?;
        if got {
            return Ok(());
        }
        if Instant::now() >= next_log {
            next_log += LOCK_LOG_EVERY;
            let holder: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
            )
            .bind(LOCK_KEY)
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten();
            tracing::info!(
                waited_s = start.elapsed().as_secs(),
                holder_pid = holder,
                "waiting for another `lookout-ingester migrate` on this database to finish"
            );
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}
