//! The unit that flows between stages: a raw message with the position it came from.
//!
//! A message comes either from Pulsar (`source`) or from a recorded file (`apply`). Its [`Position`] identifies it
//! for acknowledgement, for skipping redeliveries, and in the quarantine and parked-event tables; its
//! [`MessageId`] is the one type for a message's place in a partition.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Microseconds since the Unix epoch, UTC. Every timestamp the ingester writes is one of these.
pub type Ts = i64;

/// `(ledger, entry)` of a Pulsar entry (a producer batch, or one unbatched message).
pub type EntryId = (i64, i64);

/// A message's place in its partition: Pulsar's `(ledger, entry, batch index)`. Derived ordering is stream order
/// within one partition; displayed as `ledger:entry:batch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// Pulsar ledger id (0 for files).
    pub ledger: i64,
    /// Pulsar entry id, or the record number in a file.
    pub entry: i64,
    /// Index of the message inside a producer batch entry (0 when not batched, and for files).
    pub batch_index: i32,
}

impl MessageId {
    pub const fn new(ledger: i64, entry: i64, batch_index: i32) -> Self {
        MessageId { ledger, entry, batch_index }
    }

    /// The entry holding this message.
    pub const fn entry_id(self) -> EntryId {
        (self.ledger, self.entry)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.ledger, self.entry, self.batch_index)
    }
}

/// Where a message sits in its source. Ordered within one `source` (a topic partition, or a file).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The full partition topic name, or `file:<path>`.
    pub source: Arc<str>,
    /// The message within `source`.
    pub id: MessageId,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.source, self.id)
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

    #[test]
    fn message_ids_order_as_the_stream_and_display_as_pulsar_writes_them() {
        let ids = [MessageId::new(1, 9, 3), MessageId::new(2, 0, 0), MessageId::new(2, 0, 1), MessageId::new(2, 1, -1)];
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(ids[2].entry_id(), (2, 0));
        assert_eq!(ids[3].to_string(), "2:1:-1");
        let p = Position { source: "persistent://public/default/t-partition-0".into(), id: ids[0] };
        assert_eq!(p.to_string(), "persistent://public/default/t-partition-0@1:9:3");
    }
}
