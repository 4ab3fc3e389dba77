//! The text forms of "where": a point in time, or a Pulsar message id, as `replay --from-time/--from-message-id` and
//! `rewind --to` take them.
//!
//! **Time**: RFC 3339 (`2026-12-01T03:00:00Z`, `2026-12-01T04:00:00+01:00`), the same without a zone read as UTC
//! (`2026-12-01 03:00:00`), or a duration meaning "that long ago" (`90s`, `15m`, `2h`, `1d`). Pulsar compares it
//! with each entry's publish time.
//!
//! **Message id**, two forms:
//! * Pulsar's own, as its clients and `pulsar-admin` print a `MessageId`: `LEDGER:ENTRY[:PARTITION[:BATCH]]`
//!   (`PARTITION` is the partition index, `-1` or absent for a non-partitioned topic; `BATCH` the index inside a
//!   producer batch).
//! * This service's, as its logs and the `source`/`ledger_id`/`entry_id`/`batch_index` columns of
//!   `lookout_ingester.quarantine`, `parked_event` and `sanitized_value` show a position: `TOPIC@LEDGER:ENTRY[:BATCH]`,
//!   `TOPIC` the partition's topic name (`persistent://public/default/events-partition-3`, or a short form).
//!
//! A message id names one partition; on a partitioned topic give one per partition (repeat the flag).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::message::MessageId;
use crate::source::full_topic_name;

/// A message id as given on the command line: the partition it names and the message in that partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// The partition it names: an index (Pulsar's form), a topic name (ours), or neither (`LEDGER:ENTRY`).
    pub partition: PartitionRef,
    /// The message; its batch index is 0 when not given.
    pub id: MessageId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionRef {
    /// No partition given: only valid for a non-partitioned topic.
    None,
    Index(u32),
    /// A full topic name (normalised with [`full_topic_name`]).
    Topic(String),
}

impl MessageRef {
    /// The partition topic it names among `partitions` (the topic's partition names, in index order; one name, the
    /// topic itself, for a non-partitioned topic). An error says why it names none of them.
    pub fn resolve<'a>(&self, partitions: &'a [String]) -> Result<&'a String, String> {
        let partitioned = partitions.len() > 1 || partitions.first().is_some_and(|p| p.contains("-partition-"));
        match &self.partition {
            PartitionRef::None if !partitioned => Ok(&partitions[0]),
            PartitionRef::None => Err(format!(
                "message id {}:{} names no partition, and the topic has {} partitions: write it as \
                 LEDGER:ENTRY:PARTITION or TOPIC-partition-N@LEDGER:ENTRY",
                self.id.ledger,
                self.id.entry,
                partitions.len()
            )),
            PartitionRef::Index(i) if !partitioned && *i == 0 => Ok(&partitions[0]),
            PartitionRef::Index(i) => partitions.get(*i as usize).filter(|_| partitioned).ok_or_else(|| {
                format!("partition {i} does not exist (the topic has {} partition(s))", partitions.len())
            }),
            PartitionRef::Topic(t) => partitions
                .iter()
                .find(|p| *p == t)
                .ok_or_else(|| format!("{t} is not a partition of this topic ({})", partitions.join(", "))),
        }
    }
}

/// Where to start (replay) or rewind to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Milliseconds since the Unix epoch (Pulsar's publish-time unit).
    Time(i64),
    /// One message id per partition named.
    Ids(Vec<MessageRef>),
}

/// Parses a time or a message id (see the module documentation), whichever the text is.
pub fn parse_target(text: &str) -> Result<Target, String> {
    if looks_like_message_id(text) {
        parse_message_id(text).map(|id| Target::Ids(vec![id]))
    } else {
        parse_time(text).map(Target::Time)
    }
}

/// Several `--to` values: one time, or message ids (at most one per partition is checked when resolving).
pub fn parse_targets(texts: &[String]) -> Result<Target, String> {
    let mut ids = Vec::new();
    for text in texts {
        match parse_target(text)? {
            Target::Time(t) if texts.len() == 1 => return Ok(Target::Time(t)),
            Target::Time(_) => return Err(format!("{text:?}: give one time, or message ids (one per partition)")),
            Target::Ids(mut more) => ids.append(&mut more),
        }
    }
    if ids.is_empty() {
        return Err("no time or message id given".into());
    }
    Ok(Target::Ids(ids))
}

fn looks_like_message_id(text: &str) -> bool {
    // Times have a `T` or a space between date and clock, durations a unit and no `:`.
    text.contains('@') || (text.contains(':') && text.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '-'))
}

/// Parses a message id in either form.
pub fn parse_message_id(text: &str) -> Result<MessageRef, String> {
    let bad = |why: &str| {
        format!(
            "{text:?} is not a message id ({why}); use LEDGER:ENTRY[:PARTITION[:BATCH]] or TOPIC@LEDGER:ENTRY[:BATCH]"
        )
    };
    let int = |s: &str| s.trim().parse::<i64>().map_err(|_| bad(&format!("{s:?} is not a number")));
    if let Some((topic, rest)) = text.rsplit_once('@') {
        let parts: Vec<&str> = rest.split(':').collect();
        if !(2..=3).contains(&parts.len()) || topic.trim().is_empty() {
            return Err(bad("expected TOPIC@LEDGER:ENTRY[:BATCH]"));
        }
        let batch = parts.get(2).map(|b| int(b)).transpose()?.unwrap_or(0);
        let batch = i32::try_from(batch).map_err(|_| bad("batch index out of range"))?;
        return checked(
            MessageRef {
                partition: PartitionRef::Topic(full_topic_name(topic)),
                id: MessageId::new(int(parts[0])?, int(parts[1])?, batch),
            },
            &bad,
        );
    }
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=4).contains(&parts.len()) {
        return Err(bad("expected 2 to 4 numbers separated by ':'"));
    }
    let partition = match parts.get(2).map(|p| int(p)).transpose()? {
        None | Some(-1) => PartitionRef::None,
        Some(p) => PartitionRef::Index(u32::try_from(p).map_err(|_| bad("partition out of range"))?),
    };
    let batch = match parts.get(3).map(|b| int(b)).transpose()? {
        None | Some(-1) => 0,
        Some(b) => i32::try_from(b).map_err(|_| bad("batch index out of range"))?,
    };
    checked(MessageRef { partition, id: MessageId::new(int(parts[0])?, int(parts[1])?, batch) }, &bad)
}

fn checked(given: MessageRef, bad: &dyn Fn(&str) -> String) -> Result<MessageRef, String> {
    let id = given.id;
    if id.ledger < 0 || id.entry < 0 || id.batch_index < 0 {
        return Err(bad("ledger, entry and batch index cannot be negative"));
    }
    Ok(given)
}

/// Parses a time: RFC 3339, the same without a zone (UTC), or a duration ago. Milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, SystemTime::now())
}

fn parse_time_at(text: &str, now: SystemTime) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return millis(t);
    }
    match humantime::parse_duration(text) {
        Ok(ago) if !ago.is_zero() => millis(now.checked_sub(ago).ok_or_else(|| format!("{text:?} is too long ago"))?),
        _ => Err(format!(
            "{text:?} is neither a time (RFC 3339, e.g. 2026-12-01T03:00:00Z), a duration ago (e.g. 15m, 2h) nor a \
             message id (LEDGER:ENTRY[:PARTITION[:BATCH]] or TOPIC@LEDGER:ENTRY[:BATCH])"
        )),
    }
}

fn millis(t: SystemTime) -> Result<i64, String> {
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| "times before 1970 are not supported".to_string())?;
    i64::try_from(d.as_millis()).map_err(|_| "time out of range".into())
}

/// A time for people: RFC 3339 in UTC, milliseconds.
pub fn show_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(partition: PartitionRef, ledger: i64, entry: i64, batch: i32) -> MessageRef {
        MessageRef { partition, id: MessageId::new(ledger, entry, batch) }
    }

    #[test]
    fn pulsar_message_ids() {
        assert_eq!(parse_message_id("123:45"), Ok(id(PartitionRef::None, 123, 45, 0)));
        assert_eq!(parse_message_id("123:45:-1"), Ok(id(PartitionRef::None, 123, 45, 0)));
        assert_eq!(parse_message_id("123:45:2"), Ok(id(PartitionRef::Index(2), 123, 45, 0)));
        assert_eq!(parse_message_id("123:45:2:7"), Ok(id(PartitionRef::Index(2), 123, 45, 7)));
        assert_eq!(parse_message_id("123:45:-1:-1"), Ok(id(PartitionRef::None, 123, 45, 0)));
        for bad in ["123", "1:2:3:4:5", "a:1", "-5:1", "1:-2", "1:2:3:-4"] {
            assert!(parse_message_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn our_position_form() {
        let full = "persistent://public/default/events-partition-3";
        assert_eq!(parse_message_id(&format!("{full}@9:8:1")), Ok(id(PartitionRef::Topic(full.into()), 9, 8, 1)));
        assert_eq!(parse_message_id("events-partition-3@9:8"), Ok(id(PartitionRef::Topic(full.into()), 9, 8, 0)));
        assert!(parse_message_id("@9:8").is_err());
        assert!(parse_message_id("events@9").is_err());
    }

    #[test]
    fn times_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time_at("2026-12-01T03:00:00Z", now), Ok(1_796_094_000_000));
        assert_eq!(parse_time_at("2026-12-01T04:00:00+01:00", now), Ok(1_796_094_000_000));
        assert_eq!(parse_time_at("2026-12-01 03:00:00.250", now), Ok(1_796_094_000_250));
        assert_eq!(parse_time_at("15m", now), Ok(1_800_000_000_000 - 900_000));
        assert_eq!(parse_time_at("1h 30m", now), Ok(1_800_000_000_000 - 5_400_000));
        assert!(parse_time_at("yesterday", now).is_err());
        assert!(parse_time_at("0s", now).is_err());
        assert_eq!(show_time(1_796_094_000_250), "2026-12-01T03:00:00.250Z");
    }

    #[test]
    fn either_form_is_recognised() {
        assert!(matches!(parse_target("2026-12-01T03:00:00Z"), Ok(Target::Time(_))));
        assert!(matches!(parse_target("2h"), Ok(Target::Time(_))));
        assert!(matches!(parse_target("12:34"), Ok(Target::Ids(_))));
        assert!(matches!(parse_target("12:34:-1"), Ok(Target::Ids(_))));
        assert!(matches!(parse_target("events-partition-0@12:34"), Ok(Target::Ids(_))));
        let many = parse_targets(&["1:2:0".into(), "3:4:1".into()]).unwrap();
        assert_eq!(many, Target::Ids(vec![id(PartitionRef::Index(0), 1, 2, 0), id(PartitionRef::Index(1), 3, 4, 0)]));
        assert!(parse_targets(&["2h".into(), "1:2:0".into()]).is_err());
        assert!(parse_targets(&[]).is_err());
    }

    #[test]
    fn ids_resolve_to_partitions() {
        let parts: Vec<String> = (0..2).map(|i| format!("persistent://public/default/t-partition-{i}")).collect();
        assert_eq!(id(PartitionRef::Index(1), 1, 1, 0).resolve(&parts), Ok(&parts[1]));
        assert!(id(PartitionRef::Index(2), 1, 1, 0).resolve(&parts).is_err());
        assert!(id(PartitionRef::None, 1, 1, 0).resolve(&parts).is_err());
        assert_eq!(id(PartitionRef::Topic(parts[0].clone()), 1, 1, 0).resolve(&parts), Ok(&parts[0]));
        assert!(id(PartitionRef::Topic("persistent://x/y/z".into()), 1, 1, 0).resolve(&parts).is_err());
        let plain = vec!["persistent://public/default/t".to_string()];
        assert_eq!(id(PartitionRef::None, 1, 1, 0).resolve(&plain), Ok(&plain[0]));
        assert_eq!(id(PartitionRef::Index(0), 1, 1, 0).resolve(&plain), Ok(&plain[0]));
        assert!(id(PartitionRef::Index(1), 1, 1, 0).resolve(&plain).is_err());
    }
}
