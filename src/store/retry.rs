//! Retry: runs one transaction attempt until it commits, with jittered exponential backoff between transient
//! failures. The first data error (class 22 or 23) switches the attempts to isolation mode instead of waiting.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::{ErrorClass, StoreError, classify, sqlstate};
use crate::metrics as m;

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The longest wait between two attempts (waits start at 250 ms and double).
    pub max_backoff: Duration,
    /// Give up ([`StoreError::GaveUp`]) after this many failed attempts; `None` retries for ever.
    pub max_attempts: Option<u32>,
}

/// A successful attempt, and how it was reached.
#[derive(Debug)]
pub struct Retried<T> {
    pub value: T,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// Whether the successful attempt ran in isolation mode.
    pub isolated: bool,
}

/// Calls `attempt(isolate)` until it succeeds, `cancel` fires while waiting, or the attempt limit is reached.
/// Every failure is counted by SQLSTATE and class.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    cancel: &CancellationToken,
    mut attempt: F,
) -> Result<Retried<T>, StoreError>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let mut attempts = 0u32;
    let mut isolate = false;
    let mut delay = Duration::from_millis(250);
    loop {
        attempts += 1;
        let e = match attempt(isolate).await {
            Ok(value) => return Ok(Retried { value, attempts, isolated: isolate }),
            Err(e) => e,
        };
        let class = classify(&e);
        m::db_error(sqlstate(&e).as_deref(), class.as_str());
        if class == ErrorClass::Data && !isolate {
            tracing::warn!(error = %e, sqlstate = ?sqlstate(&e), "batch rejected; isolating the offending events");
            isolate = true;
            continue;
        }
        if policy.max_attempts.is_some_and(|max| attempts >= max) {
            return Err(StoreError::GaveUp { attempts, last: e.to_string() });
        }
        let jitter = rand::random_range(0.5..1.0);
        let wait = delay.mul_f64(jitter);
        tracing::warn!(error = %e, sqlstate = ?sqlstate(&e), attempt = attempts, retry_in = ?wait, "batch not stored; will retry");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return Err(StoreError::Cancelled),
        }
        delay = (delay * 2).min(policy.max_backoff);
    }
}
