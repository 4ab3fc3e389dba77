//! Writer: the stage after convert. Stores each batch in **one transaction** and retries until it has, doing what
//! needs both the converter and the store:
//!
//! 1. lock the partitions' committed positions and skip messages at or before them (redeliveries); hold back a
//!    partition whose messages do not continue its position (a gap in delivery, `gaps`: nothing of it is written
//!    or acknowledged, and the source is asked to deliver it again);
//! 2. take the parked events whose parent job or run this batch creates, and convert them with the batch
//!    (`attempt`);
//! 3. write the row changes (`store::stage`; updates of jobs it wrote last merged in memory and written by
//!    compare-and-set, `known`), or, when Postgres rejects the data, find the events it rejects by bisection under
//!    savepoints (`isolate`);
//! 4. park the events whose parent does not exist, record quarantined messages and sanitized values (`records`
//!    builds their rows from the messages);
//! 5. advance the positions and commit; then count what committed (metrics are recorded here, once, after the
//!    commit) and re-apply parked events a concurrent transaction may have left behind (`reconcile`).
//!
//! Errors are classified by SQLSTATE (docs/compatibility.md D6): connection, serialization, deadlock, resource and shutdown
//! errors are retried with jittered backoff, keeping the batch; data errors (classes 22 and 23) switch the batch to
//! isolation: each part is applied under a savepoint, halving on failure, until the events Postgres rejects are
//! found; they are quarantined with their SQLSTATE and the rest commits. Nothing is acknowledged unless it
//! committed.

mod attempt;
pub mod gaps;
mod isolate;
pub mod known;
mod reconcile;
mod records;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::convert::Converter;
use crate::metrics as m;
use crate::states::RowsWritten;
use crate::store::Store;
use crate::store::position::Positions;
use crate::store::retry::{RetryPolicy, retry};

pub use crate::store::StoreError;

/// What a committed batch did.
#[derive(Debug, Default, Clone)]
pub struct WriteReport {
    /// The highest committed position per source (topic partition), for acknowledgements.
    pub committed: Positions,
    /// Messages skipped because an earlier transaction had already committed them.
    pub skipped_messages: usize,
    /// Partitions held back for a gap in delivery, each with its committed position (the source rewinds them), and
    /// the messages held back with them (neither written nor acknowledged).
    pub gaps: Positions,
    pub held_back_messages: usize,
    /// Messages and events this transaction committed (not counting skipped ones, nor re-applied parked events).
    pub committed_messages: usize,
    pub committed_events: usize,
    /// Rows affected per (table, operation).
    pub rows: Vec<RowsWritten>,
    pub parked: u64,
    /// Events parked by this batch, per event kind (updates whose job or run does not exist, docs/compatibility.md D20).
    pub parked_by_kind: Vec<(String, u64)>,
    pub unparked: usize,
    pub quarantined: u64,
    pub sanitized: u64,
    /// Events that changed no row, per kind (docs/compatibility.md §5.2).
    pub ignored: Vec<(&'static str, u64)>,
    /// Reasons of the quarantined messages and events, and (field, fix) of the sanitized values, for the metrics.
    pub quarantine_reasons: Vec<&'static str>,
    pub sanitized_fields: Vec<(&'static str, &'static str)>,
    /// Jobs and runs this transaction created, or parked events for: once it has committed, parked events waiting
    /// for them whose parent exists are re-applied (see [`Writer::reconcile`]).
    pub watch_jobs: Vec<String>,
    pub watch_runs: Vec<String>,
    /// Transactions tried before this one committed.
    pub attempts: u32,
    /// Whether poison rows had to be isolated.
    pub isolated: bool,
}

/// The writer: the converter, the store, and where positions are recorded.
pub struct Writer {
    store: Store,
    converter: Converter,
    subscription: Option<String>,
    retry: RetryPolicy,
    /// Off (`None`) unless [`Writer::with_gap_guard`]: `apply` and `replay` start wherever they are told to.
    gaps: Option<gaps::GapGuard>,
    /// The active jobs whose stored columns this writer knows (`known`).
    known: known::KnownJobs,
}

impl Writer {
    /// A writer with its own pool (see [`Writer::connect_lanes`]).
    pub async fn connect(
        options: sqlx::postgres::PgConnectOptions,
        converter: Converter,
        subscription: Option<String>,
        max_backoff: Duration,
    ) -> sqlx::Result<Writer> {
        Self::connect_lanes(options, converter, subscription, max_backoff, 1).await
    }

    /// A writer for `lanes` concurrent lanes (one connection each, see [`Store::connect_lazy`]). Positions are
    /// recorded under `subscription` (none: not tracked, as for `apply`).
    pub async fn connect_lanes(
        options: sqlx::postgres::PgConnectOptions,
        converter: Converter,
        subscription: Option<String>,
        max_backoff: Duration,
        lanes: usize,
    ) -> sqlx::Result<Writer> {
        let store = Store::connect_lazy(options, lanes);
        let retry = RetryPolicy { max_backoff, max_attempts: None };
        let known = known::KnownJobs::new(known::DEFAULT_CAPACITY);
        Ok(Writer { store, converter, subscription, retry, gaps: None, known })
    }

    /// Holds back a partition whose messages do not continue its committed position (see [`gaps`]), accepting the
    /// gap once it has persisted for `accept_after` ([`gaps::ACCEPT_AFTER`] in the service); 0 turns it off.
    pub fn with_gap_guard(mut self, accept_after: Duration) -> Self {
        self.gaps = (!accept_after.is_zero()).then(|| gaps::GapGuard::new(accept_after));
        self
    }

    /// Knows at most `capacity` active jobs (see [`known`]); 0 merges every update in SQL.
    pub fn with_known_jobs(mut self, capacity: usize) -> Self {
        self.known = known::KnownJobs::new(capacity);
        self
    }

    /// Gives up (with [`StoreError::GaveUp`]) after this many failed transactions instead of retrying forever.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.retry.max_attempts = Some(attempts);
        self
    }

    pub fn converter(&self) -> &Converter {
        &self.converter
    }

    /// Writes the batch, retrying transient failures with backoff until it commits, `cancel` fires while waiting,
    /// or the attempt limit is reached.
    pub async fn write(&self, batch: &Batch, cancel: &CancellationToken) -> Result<WriteReport, StoreError> {
        let started = Instant::now();
        let done = retry(&self.retry, cancel, move |isolate| self.attempt(batch, isolate)).await?;
        let mut report = done.value;
        report.attempts = done.attempts;
        report.isolated = done.isolated;
        record_metrics(&report, started.elapsed());
        self.store.refresh_statistics(&report.rows);
        self.reconcile_after(&report).await;
        Ok(report)
    }

    /// The number of parked events (for the gauge).
    pub async fn parked_count(&self) -> sqlx::Result<i64> {
        self.store.parked_count().await
    }
}

/// Everything a committed batch counts, once.
fn record_metrics(report: &WriteReport, elapsed: Duration) {
    m::batch_committed(&m::BatchCommitted {
        elapsed,
        attempts: report.attempts,
        skipped_messages: report.skipped_messages as u64,
        committed_messages: report.committed_messages as u64,
        committed_events: report.committed_events as u64,
        rows: &report.rows.iter().map(RowsWritten::labels).collect::<Vec<_>>(),
        parked_by_kind: &report.parked_by_kind,
        unparked: report.unparked as u64,
        ignored: &report.ignored,
        quarantined: &report.quarantine_reasons,
        sanitized: &report.sanitized_fields,
    });
}
