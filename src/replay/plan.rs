//! What a replay reads: per partition, a window from a start (the earliest message, the first at or after a time,
//! or a given message id) to the partition's last message as of the start, and how many entries it spans (for the
//! progress display). Also resolves a `rewind` target to one message id per partition.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use super::target::Target;
use crate::message::MessageId;
use crate::source::admin::Admin;

/// One partition's share of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The partition topic's full name (the topic itself when it is not partitioned).
    pub partition: String,
    /// The first message to apply (`None`: the earliest the topic holds).
    pub start: Option<MessageId>,
    /// The partition's last message when the replay started (`None`: it had none); nothing after it is read.
    pub end: Option<MessageId>,
    /// Entries from `start` to `end`, when the admin API could tell.
    pub entries: Option<u64>,
}

impl Window {
    /// Nothing to read: no message at all, or the start lies after the end.
    pub fn is_empty(&self) -> bool {
        match (self.start, self.end) {
            (_, None) => true,
            (Some(s), Some(e)) => s.entry_id() > e.entry_id(),
            (None, Some(_)) => self.entries == Some(0),
        }
    }
}

/// Where a target lands on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// At this message.
    At(MessageId),
    /// The partition holds no message that late.
    NothingAfter,
}

/// The landing of `target` on each partition it concerns: every partition for a time, the named ones for message
/// ids (an error when one names no partition of the topic, or two name the same).
pub async fn resolve(
    admin: &Admin,
    partitions: &[String],
    target: &Target,
) -> anyhow::Result<BTreeMap<String, Landing>> {
    let mut out = BTreeMap::new();
    match target {
        Target::Time(ms) => {
            for p in partitions {
                let landing = match admin.message_id_at(p, *ms).await? {
                    Some(found) => Landing::At(found.id().unwrap_or_default()),
                    None => Landing::NothingAfter,
                };
                out.insert(p.clone(), landing);
            }
        }
        Target::Ids(ids) => {
            for id in ids {
                let p = id.resolve(partitions).map_err(anyhow::Error::msg)?;
                if out.insert(p.clone(), Landing::At(id.id)).is_some() {
                    bail!("two message ids name partition {p}");
                }
            }
        }
    }
    Ok(out)
}

/// The windows of a replay of `topic` from `from` (`None`: the earliest). With message ids, every partition needs one.
pub async fn plan(admin: &Admin, topic: &str, from: Option<&Target>) -> anyhow::Result<Vec<Window>> {
    let partitions = admin.partitions(topic).await?;
    let landings = match from {
        Some(target) => resolve(admin, &partitions, target).await?,
        None => BTreeMap::new(),
    };
    let mut windows = Vec::with_capacity(partitions.len());
    for p in &partitions {
        let start = match (from, landings.get(p)) {
            (None, _) => None,
            (Some(_), Some(Landing::At(key))) => Some(*key),
            (Some(_), Some(Landing::NothingAfter)) => Some(MessageId::new(i64::MAX, i64::MAX, 0)),
            (Some(_), None) => bail!(
                "no message id given for partition {p}: on a partitioned topic give one per partition \
                 (--from-message-id LEDGER:ENTRY:PARTITION, repeated), or use --from-time"
            ),
        };
        let end = admin.last_message_id(p).await?.id();
        let ledgers = admin.ledgers(p).await.with_context(|| format!("the ledgers of {p}"))?;
        let first = start.map(MessageId::entry_id).or_else(|| ledgers.first());
        let entries = match (first, end) {
            (Some(f), Some(e)) => Some(ledgers.entries_between(f, e.entry_id())),
            _ => Some(0),
        };
        windows.push(Window { partition: p.clone(), start, end, entries });
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start: Option<MessageId>, end: Option<MessageId>, entries: Option<u64>) -> Window {
        Window { partition: "p".into(), start, end, entries }
    }

    #[test]
    fn empty_windows() {
        assert!(w(None, None, None).is_empty());
        assert!(w(None, Some(MessageId::new(5, 1, 0)), Some(0)).is_empty(), "retention removed everything");
        assert!(!w(None, Some(MessageId::new(5, 1, 0)), Some(2)).is_empty());
        assert!(!w(None, Some(MessageId::new(5, 1, 0)), None).is_empty());
        assert!(w(Some(MessageId::new(5, 2, 0)), Some(MessageId::new(5, 1, 0)), None).is_empty());
        assert!(
            !w(Some(MessageId::new(5, 1, 3)), Some(MessageId::new(5, 1, 0)), None).is_empty(),
            "the end's batch index may be unknown"
        );
        assert!(w(Some(MessageId::new(i64::MAX, i64::MAX, 0)), Some(MessageId::new(5, 1, 0)), None).is_empty());
    }
}
