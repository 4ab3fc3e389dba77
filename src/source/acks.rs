//! Acknowledgements ([`AckTracker`]): which Pulsar entries are complete and may be acknowledged, and which
//! redelivered messages to drop. pulsar-rs has no batch-index acks (acking any message of a producer batch acks the
//! whole entry), so an entry is acknowledged only once it is complete — its last message committed, or a later
//! entry of the same partition committed — with a cumulative ack of the last complete entry per partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CommitReport;
use crate::message::{EntryId, MessageId, Position};

/// Per-partition acknowledgement state.
#[derive(Debug, Default)]
struct PartitionAcks {
    /// The highest position forwarded downstream; redeliveries at or before it are dropped.
    highest_forwarded: Option<MessageId>,
    /// Entries forwarded and not yet complete: entry → number of messages in it.
    open: BTreeMap<EntryId, i32>,
    /// The highest complete entry (every message of it, and of every entry before it, committed).
    complete: Option<EntryId>,
    /// The highest entry whose cumulative ack was handed to the client.
    acked: Option<EntryId>,
    /// Messages in entries completed since the last ack (for the processed-messages counter).
    completed_messages: u64,
}

/// Which entries may be acknowledged: fed with what is forwarded and what is committed.
#[derive(Debug, Default)]
pub struct AckTracker {
    partitions: foldhash::HashMap<Arc<str>, PartitionAcks>,
}

impl AckTracker {
    /// The shared name of a partition topic (one allocation per partition, not per message).
    pub fn source(&mut self, topic: &str) -> Arc<str> {
        if let Some((name, _)) = self.partitions.get_key_value(topic) {
            return name.clone();
        }
        let name: Arc<str> = topic.into();
        self.partitions.insert(name.clone(), PartitionAcks::default());
        name
    }

    /// Records a message about to be forwarded. `false` means it is a redelivery of something already forwarded:
    /// drop it.
    pub fn admit(&mut self, position: &Position, entry_size: i32) -> bool {
        let id = position.id;
        let p = match self.partitions.get_mut(&*position.source) {
            Some(p) => p,
            None => self.partitions.entry(position.source.clone()).or_default(),
        };
        if p.highest_forwarded.is_some_and(|h| id <= h) {
            return false;
        }
        p.highest_forwarded = Some(id);
        let entry = id.entry_id();
        let size = p.open.entry(entry).or_insert(entry_size);
        *size = (*size).max(entry_size);
        true
    }

    /// Records that everything up to `id` in `topic` is committed.
    pub fn committed(&mut self, topic: &str, id: MessageId) {
        let Some(p) = self.partitions.get_mut(topic) else { return };
        let entry = id.entry_id();
        let done = match p.open.get(&entry) {
            Some(&size) if id.batch_index >= size - 1 => Some(entry),
            _ => p.open.range(..entry).next_back().map(|(e, _)| *e),
        };
        let Some(done) = done else { return };
        if p.complete.is_some_and(|c| c >= done) {
            return;
        }
        let later = p.open.split_off(&(done.0, done.1.saturating_add(1)));
        let finished = std::mem::replace(&mut p.open, later);
        p.completed_messages += finished.values().map(|n| u64::try_from(*n).unwrap_or(0)).sum::<u64>();
        p.complete = Some(done);
    }

    /// Cumulative acks to send: the last complete entry of each partition where it is beyond the last ack.
    pub fn due(&self) -> Vec<(Arc<str>, EntryId)> {
        let mut due: Vec<(Arc<str>, EntryId)> = self
            .partitions
            .iter()
            .filter_map(|(topic, p)| match p.complete {
                Some(c) if p.acked.is_none_or(|a| c > a) => Some((topic.clone(), c)),
                _ => None,
            })
            .collect();
        due.sort();
        due
    }

    /// Records that the cumulative ack of `entry` was handed to the client; returns the messages it newly covers.
    pub fn acked(&mut self, topic: &str, entry: EntryId) -> u64 {
        let Some(p) = self.partitions.get_mut(topic) else { return 0 };
        if p.acked.is_none_or(|a| entry > a) {
            p.acked = Some(entry);
        }
        std::mem::take(&mut p.completed_messages)
    }

    /// After a rebuild: acks handed to the old consumer may never have reached the broker, so send them again.
    pub fn reassert(&mut self) {
        for p in self.partitions.values_mut() {
            p.acked = None;
        }
    }

    /// The writer held `topic` back for a gap in delivery after `committed` (`writer::gaps`): forgets what was
    /// forwarded after that position, so the broker's next delivery of it is forwarded again instead of dropped as
    /// a redelivery. (Messages still in the pipeline from before are held back too, or skipped once committed.)
    pub fn rewind(&mut self, topic: &str, committed: MessageId) {
        let Some(p) = self.partitions.get_mut(topic) else { return };
        if p.highest_forwarded.is_some_and(|h| h > committed) {
            p.highest_forwarded = Some(committed);
        }
        let (ledger, entry) = committed.entry_id();
        drop(p.open.split_off(&(ledger, entry.saturating_add(1))));
    }

    /// Nothing forwarded from `topic` is waiting to be committed.
    pub fn settled(&self, topic: &str) -> bool {
        self.partitions.get(topic).is_none_or(|p| p.open.is_empty())
    }
}

/// At most one rewind per partition in this long: the held-back messages still in the pipeline are each reported
/// again, and must not rebuild the consumer again and again.
pub const REWIND_EVERY: Duration = Duration::from_secs(10);

/// Gaps in delivery the writer reported and no commit has passed yet, and when each partition was last rewound.
#[derive(Debug, Default)]
pub struct Rewinds {
    /// Partition → (the committed position the gap follows, when it was last reported).
    waiting: HashMap<String, (MessageId, Instant)>,
    last: HashMap<String, Instant>,
}

impl Rewinds {
    /// Takes a commit report: forgets the gaps its committed positions have passed, notes the ones it reports, and
    /// rewinds as [`Rewinds::due`] does.
    pub fn report(&mut self, report: &CommitReport, tracker: &mut AckTracker) -> bool {
        for (topic, id) in &report.committed {
            if self.waiting.get(topic).is_some_and(|(gap, _)| id > gap) {
                self.waiting.remove(topic);
            }
        }
        for (topic, committed) in &report.gaps {
            self.waiting.insert(topic.clone(), (*committed, Instant::now()));
        }
        self.due(tracker)
    }

    /// Rewinds `tracker` for each waiting gap whose partition was not rewound within [`REWIND_EVERY`]; `true` when
    /// one was: the consumer is then rebuilt, and the broker delivers again from the last acknowledged entry. A gap
    /// not reported again since its last rewind is dropped instead: nothing of that partition is held back any more
    /// (it is delivered to another replica now, or what arrived continued the position).
    pub fn due(&mut self, tracker: &mut AckTracker) -> bool {
        let mut any = false;
        let mut stale = Vec::new();
        for (topic, (committed, reported)) in &self.waiting {
            if let Some(rewound) = self.last.get(topic) {
                if rewound.elapsed() < REWIND_EVERY {
                    continue;
                }
                if reported < rewound {
                    stale.push(topic.clone());
                    continue;
                }
            }
            self.last.insert(topic.clone(), Instant::now());
            tracing::warn!(
                topic = %topic, committed = %committed,
                "gap in delivery: rebuilding the consumer so the broker delivers the partition again"
            );
            tracker.rewind(topic, *committed);
            any = true;
        }
        for topic in stale {
            self.waiting.remove(&topic);
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn pos(t: &mut AckTracker, topic: &str, l: i64, e: i64, b: i32) -> Position {
        Position { source: t.source(topic), id: MessageId::new(l, e, b) }
    }

    /// Forwards every message of the given entries `(entry id, size)` on ledger 1.
    fn forward(t: &mut AckTracker, topic: &str, entries: &[(i64, i32)]) {
        for &(e, size) in entries {
            for b in 0..size {
                let p = pos(t, topic, 1, e, b);
                assert!(t.admit(&p, size), "fresh message {p} refused");
            }
        }
    }

    #[test]
    fn a_partly_committed_entry_is_not_acked() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 5)]);
        t.committed("p0", MessageId::new(1, 10, 2));
        assert!(t.due().is_empty());
        t.committed("p0", MessageId::new(1, 10, 4));
        assert_eq!(t.due(), vec![("p0".into(), (1, 10))]);
        assert_eq!(t.acked("p0", (1, 10)), 5);
        assert!(t.due().is_empty());
        assert!(t.settled("p0"));
    }

    #[test]
    fn a_later_entry_committed_completes_the_earlier_ones() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 3), (11, 1), (12, 4)]);
        t.committed("p0", MessageId::new(1, 12, 1));
        assert_eq!(t.due(), vec![("p0".into(), (1, 11))]);
        assert_eq!(t.acked("p0", (1, 11)), 4);
        assert!(!t.settled("p0"));
        t.committed("p0", MessageId::new(1, 12, 3));
        assert_eq!(t.due(), vec![("p0".into(), (1, 12))]);
        assert_eq!(t.acked("p0", (1, 12)), 4);
    }

    #[test]
    fn an_unbatched_message_is_a_whole_entry() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(7, 1)]);
        t.committed("p0", MessageId::new(1, 7, 0));
        assert_eq!(t.due(), vec![("p0".into(), (1, 7))]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(1, 2)]);
        forward(&mut t, "p1", &[(1, 2)]);
        t.committed("p0", MessageId::new(1, 1, 1));
        t.committed("p1", MessageId::new(1, 1, 0));
        assert_eq!(t.due(), vec![("p0".into(), (1, 1))]);
    }

    #[test]
    fn redeliveries_at_or_before_the_highest_forwarded_are_dropped() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 5)]);
        // The consumer is rebuilt mid-entry: the broker sends the whole entry again.
        for b in 0..5 {
            let p = pos(&mut t, "p0", 1, 10, b);
            assert!(!t.admit(&p, 5));
        }
        let p = pos(&mut t, "p0", 1, 11, 0);
        assert!(t.admit(&p, 1));
        // Other partitions are not affected.
        let p = pos(&mut t, "p1", 1, 10, 0);
        assert!(t.admit(&p, 1));
    }

    #[test]
    fn after_a_rewind_for_a_gap_the_messages_after_the_committed_position_are_forwarded_again() {
        use crate::source::Committed;
        let mut t = AckTracker::default();
        // Entries 10 and 11 committed; 14 and 15 arrived first (12 and 13 missing) and were held back.
        forward(&mut t, "p0", &[(10, 1), (11, 2), (14, 1), (15, 1)]);
        t.committed("p0", MessageId::new(1, 11, 1));
        let gaps: Committed = [("p0".to_string(), MessageId::new(1, 11, 1))].into_iter().collect();
        let held = CommitReport { committed: gaps.clone(), gaps };
        let mut rewinds = Rewinds::default();
        assert!(rewinds.report(&held, &mut t));
        assert!(!rewinds.report(&held, &mut t), "reported again at once: no second rewind");
        assert!(!rewinds.due(&mut t));
        // The broker delivers again from entry 11 (acked up to 10): 11 is dropped, 12 to 15 are forwarded.
        let p = pos(&mut t, "p0", 1, 11, 1);
        assert!(!t.admit(&p, 2), "committed: dropped");
        forward(&mut t, "p0", &[(12, 1), (13, 1), (14, 1), (15, 1)]);
        t.committed("p0", MessageId::new(1, 15, 0));
        assert_eq!(t.due(), vec![("p0".into(), (1, 15))]);
        assert!(t.settled("p0"));
        // A gap not reported again since its rewind is dropped once the rewind period has passed.
        let now = Instant::now();
        rewinds.waiting.get_mut("p0").unwrap().1 = now - 2 * REWIND_EVERY;
        rewinds.last.insert("p0".into(), now - REWIND_EVERY);
        assert!(!rewinds.due(&mut t));
        assert!(rewinds.waiting.is_empty());
        // Reported again after the period: rewound again; then a commit past the gap ends it.
        assert!(rewinds.report(&held, &mut t));
        let passed =
            CommitReport { committed: [("p0".to_string(), MessageId::new(1, 15, 0))].into(), ..Default::default() };
        rewinds.report(&passed, &mut t);
        assert!(rewinds.waiting.is_empty());
    }

    #[test]
    fn acks_are_sent_again_after_a_rebuild_without_counting_twice() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 2)]);
        t.committed("p0", MessageId::new(1, 10, 1));
        assert_eq!(t.acked("p0", (1, 10)), 2);
        assert!(t.due().is_empty());
        t.reassert();
        assert_eq!(t.due(), vec![("p0".into(), (1, 10))]);
        assert_eq!(t.acked("p0", (1, 10)), 0);
    }

    #[test]
    fn commits_never_move_the_ack_back() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 1), (11, 1)]);
        t.committed("p0", MessageId::new(1, 11, 0));
        t.committed("p0", MessageId::new(1, 10, 0));
        assert_eq!(t.due(), vec![("p0".into(), (1, 11))]);
        // Unknown partitions and positions are ignored.
        t.committed("nope", MessageId::new(1, 1, 0));
        assert_eq!(t.due().len(), 1);
    }

    #[test]
    fn the_first_partial_commit_acks_nothing() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 3)]);
        t.committed("p0", MessageId::new(1, 10, 0));
        assert!(t.due().is_empty());
        assert!(!t.settled("p0"));
    }
}
