//! The unit that flows between stages: a raw message with the position it came from.
//!
//! A message comes either from Pulsar (`source`) or from a recorded file (`apply`). Its [`Position`] identifies it
//! for acknowledgement, for skipping redeliveries, and in the quarantine and parked-event tables.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Microseconds since the Unix epoch, UTC. Every timestamp the ingester writes is one of these.
pub type Ts = i64;

/// Where a message sits in its source. Ordered within one `source` (a topic partition, or a file).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The full partition topic name, or `file:<path>`.
    pub source: Arc<str>,
    /// Pulsar ledger id (0 for files).
    pub ledger_id: i64,
    /// Pulsar entry id, or the record number in a file.
    pub entry_id: i64,
    /// Index of the message inside a producer batch entry (0 when not batched, and for files).
    pub batch_index: i32,
}

impl Position {
    /// The `(ledger, entry, batch index)` triple, which orders positions of the same source.
    pub fn key(&self) -> (i64, i64, i32) {
        (self.ledger_id, self.entry_id, self.batch_index)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}:{}", self.source, self.ledger_id, self.entry_id, self.batch_index)
    }
}

/// One message as received, before decoding.
#[derive(Clone, Debug)]
pub struct RawMessage {
    pub position: Position,
    /// Number of messages in the producer batch entry this message belongs to (1 when not batched). An entry is
    /// acknowledged only once all of its messages are committed.
    pub entry_size: i32,
    /// Broker publish time; stands in for a missing event `created` time.
    pub publish_time: Ts,
    pub payload: Bytes,
}

/// Identifies one event of a batch: the message's index in the batch and the event's index in its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    pub message: u32,
    pub event: u32,
}

/// Converts a protobuf timestamp to [`Ts`], truncating below the microsecond. `None` when it is outside the
/// range Postgres `timestamp` columns and the ingester accept (years 1..=9999).
pub fn ts_from_parts(seconds: i64, nanos: i32) -> Option<Ts> {
    const MIN_SECONDS: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    Some(seconds * 1_000_000 + i64::from(nanos / 1000))
}

/// Whole Unix seconds of a timestamp, floored (for `last_transition_time_seconds`).
pub fn ts_seconds(ts: Ts) -> i64 {
    ts.div_euclid(1_000_000)
}

/// Formats a timestamp as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), for logs and tests.
pub fn ts_display(ts: Ts) -> String {
    match chrono::DateTime::from_timestamp_micros(ts) {
        Some(dt) => dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => format!("<invalid {ts}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_truncate_to_micros_and_reject_out_of_range() {
        assert_eq!(ts_from_parts(1, 999_999_999), Some(1_999_999));
        assert_eq!(ts_from_parts(-1, 500_000_000), Some(-500_000));
        assert_eq!(ts_from_parts(300_000_000_000, 0), None);
        assert_eq!(ts_from_parts(0, -1), None);
        assert_eq!(ts_seconds(-500_000), -1);
        assert_eq!(ts_seconds(1_999_999), 1);
        assert_eq!(ts_display(0), "1970-01-01 00:00:00.000000");
    }
}
