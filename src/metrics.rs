//! Metrics: every metric name lives here, with the functions the stages call to record them.
//!
//! A leaf: it imports no stage; callers hand it plain values (names, counts, durations).
//!
//! Our own metrics use the prefix `lookout_ingester_`. The reference's dashboards keep working through the
//! `armada_lookout_ingester_v2_` names it exported, recorded with the corrected meanings of docs/compatibility.md D21 (counted
//! after commit, affected rows rather than instructions, seconds as floats).

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const MESSAGES_CONSUMED: &str = "lookout_ingester_messages_consumed_total";
pub const MESSAGES_SKIPPED: &str = "lookout_ingester_messages_skipped_total";
pub const MESSAGES_COMMITTED: &str = "lookout_ingester_messages_committed_total";
pub const EVENTS_COMMITTED: &str = "lookout_ingester_events_committed_total";
pub const EVENTS_CONSUMED: &str = "lookout_ingester_events_consumed_total";
pub const EVENTS_IGNORED: &str = "lookout_ingester_events_ignored_total";
pub const ROWS_WRITTEN: &str = "lookout_ingester_rows_written_total";
pub const BATCH_EVENTS: &str = "lookout_ingester_batch_events";
pub const BATCH_BYTES: &str = "lookout_ingester_batch_bytes";
pub const STORE_SECONDS: &str = "lookout_ingester_batch_store_seconds";
pub const STORE_ATTEMPTS: &str = "lookout_ingester_batch_store_attempts_total";
pub const PUBLISH_TO_COMMIT_SECONDS: &str = "lookout_ingester_publish_to_commit_seconds";
pub const LAG_SECONDS: &str = "lookout_ingester_lag_seconds";
pub const QUARANTINED: &str = "lookout_ingester_quarantined_total";
pub const SANITIZED: &str = "lookout_ingester_sanitized_values_total";
pub const PARKED: &str = "lookout_ingester_parked_events_total";
pub const UNPARKED: &str = "lookout_ingester_unparked_events_total";
pub const PARKED_NOW: &str = "lookout_ingester_parked_events";
pub const DB_ERRORS: &str = "lookout_ingester_db_errors_total";
pub const CONSUMER_REBUILDS: &str = "lookout_ingester_consumer_rebuilds_total";
pub const ACKS: &str = "lookout_ingester_acks_total";
pub const ZOMBIE_JOBS: &str = "lookout_ingester_zombie_jobs";
pub const COMMITTED_BATCHES: &str = "lookout_ingester_batches_committed_total";
pub const CONSUMER_SUBSCRIBED: &str = "lookout_ingester_consumer_subscribed";
pub const REDELIVERIES_DROPPED: &str = "lookout_ingester_redeliveries_dropped_total";
pub const ABANDONED_BATCHES: &str = "lookout_ingester_batches_abandoned_total";
pub const DELIVERY_GAPS: &str = "lookout_ingester_delivery_gaps_total";
pub const KNOWN_JOB_WRITES: &str = "lookout_ingester_known_job_writes_total";
pub const KNOWN_JOBS: &str = "lookout_ingester_known_jobs";

pub const COMPAT_MESSAGES_PROCESSED: &str = "armada_lookout_ingester_v2_pulsar_messages_processed";
pub const COMPAT_MESSAGE_ERRORS: &str = "armada_lookout_ingester_v2_pulsar_message_errors";
pub const COMPAT_ROWS_CHANGED: &str = "armada_lookout_ingester_v2_rows_changed";
pub const COMPAT_DB_ERRORS: &str = "armada_lookout_ingester_v2_db_errors";
pub const COMPAT_PUBLISH_TIME: &str = "armada_lookout_ingester_v2_pulsar_message_publish_time";

/// Installs the global recorder and returns the handle `/metrics` renders.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let seconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
    let sizes = [1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 100000.0];
    let bytes = [1e3, 1e4, 1e5, 1e6, 4e6, 1.6e7, 6.4e7];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(STORE_SECONDS.into()), &seconds)?
        .set_buckets_for_metric(Matcher::Full(PUBLISH_TO_COMMIT_SECONDS.into()), &seconds)?
        .set_buckets_for_metric(Matcher::Full(BATCH_EVENTS.into()), &sizes)?
        .set_buckets_for_metric(Matcher::Full(BATCH_BYTES.into()), &bytes)?
        .install_recorder()?;
    Ok(handle)
}

/// [`install`] once per process; later calls return the same handle (the recorder is global, and tests start the
/// service more than once in one process).
pub fn install_once() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::Mutex<Option<PrometheusHandle>> = std::sync::Mutex::new(None);
    let mut slot = HANDLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = install()?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// What a committed batch did, as plain values.
#[derive(Debug, Default)]
pub struct BatchCommitted<'a> {
    pub elapsed: Duration,
    /// Transactions tried, the committed one included.
    pub attempts: u32,
    pub skipped_messages: u64,
    pub committed_messages: u64,
    pub committed_events: u64,
    /// Rows affected, as (table, operation, rows).
    pub rows: &'a [(&'static str, &'static str, u64)],
    /// Events parked, per event kind.
    pub parked_by_kind: &'a [(String, u64)],
    /// Parked events this batch took back because it creates their parent.
    pub unparked: u64,
    /// Events that changed no row, per kind (counted here, once, after the commit: docs/compatibility.md D21).
    pub ignored: &'a [(&'static str, u64)],
    /// Reasons of the messages and events quarantined.
    pub quarantined: &'a [&'a str],
    /// (field, fix) of the values sanitized.
    pub sanitized: &'a [(&'static str, &'static str)],
}

/// A committed batch: rows, duration, attempts, and what it quarantined, sanitized, parked and ignored.
pub fn batch_committed(batch: &BatchCommitted<'_>) {
    histogram!(STORE_SECONDS).record(batch.elapsed.as_secs_f64());
    counter!(STORE_ATTEMPTS).increment(u64::from(batch.attempts));
    counter!(COMMITTED_BATCHES).increment(1);
    counter!(MESSAGES_SKIPPED).increment(batch.skipped_messages);
    counter!(MESSAGES_COMMITTED).increment(batch.committed_messages);
    counter!(EVENTS_COMMITTED).increment(batch.committed_events);
    for (table, op, n) in batch.rows {
        counter!(ROWS_WRITTEN, "table" => *table, "operation" => *op).increment(*n);
        counter!(COMPAT_ROWS_CHANGED, "table" => *table, "operation" => *op).increment(*n);
    }
    for (kind, n) in batch.parked_by_kind {
        counter!(PARKED, "event_kind" => kind.clone()).increment(*n);
    }
    counter!(UNPARKED, "by" => "batch").increment(batch.unparked);
    for (kind, n) in batch.ignored {
        counter!(EVENTS_IGNORED, "kind" => *kind).increment(*n);
    }
    quarantined(batch.quarantined);
    for (field, fix) in batch.sanitized {
        counter!(SANITIZED, "field" => *field, "fix" => *fix).increment(1);
    }
}

/// Dead letters, by reason (`undecodable` counts as a deserialization error for the reference's metric).
pub fn quarantined(reasons: &[&str]) {
    for reason in reasons {
        counter!(QUARANTINED, "reason" => reason.to_string()).increment(1);
        let error = if *reason == "undecodable" { "deserialization" } else { "processing" };
        counter!(COMPAT_MESSAGE_ERRORS, "error" => error).increment(1);
    }
}

/// A failed database attempt: its SQLSTATE and how it is handled (`transient` or `data`).
pub fn db_error(sqlstate: Option<&str>, class: &'static str) {
    let code = sqlstate.unwrap_or("none").to_string();
    counter!(DB_ERRORS, "sqlstate" => code, "class" => class).increment(1);
    counter!(COMPAT_DB_ERRORS, "operation" => "store").increment(1);
}

/// Messages and events that entered the pipeline.
pub fn consumed(messages: u64, events_by_kind: &[(&'static str, u64)]) {
    counter!(MESSAGES_CONSUMED).increment(messages);
    for (kind, n) in events_by_kind {
        counter!(EVENTS_CONSUMED, "kind" => *kind).increment(*n);
    }
}

pub fn batch_size(events: usize, bytes: usize) {
    histogram!(BATCH_EVENTS).record(events as f64);
    histogram!(BATCH_BYTES).record(bytes as f64);
}

/// Seconds from publish to commit, one sample per message (one histogram over all partitions: a label per partition
/// would multiply its buckets by the partition count; the per-partition view is [`lag`]). The caller looks it up
/// once per batch: a lookup per message showed in profiles.
pub fn publish_to_commit() -> metrics::Histogram {
    histogram!(PUBLISH_TO_COMMIT_SECONDS)
}

/// Per partition: the lag at a commit (commit time minus the publish time of its last message), and that publish
/// time.
pub fn lag(partition: &str, seconds: f64, last_publish_unix: f64) {
    gauge!(LAG_SECONDS, "partition" => partition.to_string()).set(seconds.max(0.0));
    gauge!(COMPAT_PUBLISH_TIME, "partition" => partition.to_string()).set(last_publish_unix);
}

pub fn acked(messages: u64) {
    counter!(ACKS).increment(1);
    counter!(COMPAT_MESSAGES_PROCESSED).increment(messages);
}

pub fn consumer_rebuilt(reason: &'static str) {
    counter!(CONSUMER_REBUILDS, "reason" => reason).increment(1);
}

/// Parked events re-applied after their parent appeared in a concurrent transaction: `by` is `after_commit` (the
/// writer's check once its batch committed) or `sweep` (the periodic sweep). Events a batch takes back because it
/// creates their parent count as `by="batch"`.
pub fn reconciled(by: &'static str, events: usize) {
    counter!(UNPARKED, "by" => by).increment(events as u64);
}

pub fn parked_now(n: i64) {
    gauge!(PARKED_NOW).set(n as f64);
}

pub fn zombie_jobs(n: i64) {
    gauge!(ZOMBIE_JOBS).set(n as f64);
}

/// Whether the Pulsar consumer is subscribed (1) or being rebuilt (0).
pub fn consumer_subscribed(subscribed: bool) {
    gauge!(CONSUMER_SUBSCRIBED).set(if subscribed { 1.0 } else { 0.0 });
}

/// Messages the broker delivered again (after a consumer rebuild) that were already forwarded, so dropped.
pub fn redeliveries_dropped(n: u64) {
    counter!(REDELIVERIES_DROPPED).increment(n);
}

/// A gap in a partition's delivery (entries after the committed position missing): `held` when the writer first
/// holds the partition back for it, `accepted` when it persisted and what follows was written anyway.
pub fn delivery_gap(outcome: &'static str) {
    counter!(DELIVERY_GAPS, "outcome" => outcome).increment(1);
}

/// A batch given up at shutdown before it committed (not acknowledged; Pulsar delivers it again).
pub fn batch_abandoned() {
    counter!(ABANDONED_BATCHES).increment(1);
}

/// After a commit: updates of known jobs written by compare-and-set (`written`) or handed to the guarded merge
/// because the row had changed meanwhile (`changed_meanwhile`), and how many jobs are known now.
pub fn known_jobs(written: usize, changed_meanwhile: usize, known: usize) {
    counter!(KNOWN_JOB_WRITES, "outcome" => "written").increment(written as u64);
    counter!(KNOWN_JOB_WRITES, "outcome" => "changed_meanwhile").increment(changed_meanwhile as u64);
    gauge!(KNOWN_JOBS).set(known as f64);
}
