//! Gaps in delivery: a partition's messages are written only when they continue its committed position.
//!
//! Within one ledger, Pulsar numbers entries 0, 1, 2, …, and a batch holds a partition's messages in stream order,
//! so after the committed position `ledger:entry:index` the next message is `ledger:entry:index+1` or
//! `ledger:entry+1:0`. When a batch's first fresh message of a partition is further on in the same ledger, entries
//! between never reached this writer: the broker delivered later entries first (seen after a Failover takeover, when
//! the new active consumer gets entries read for the old one's cursor before the rewind) and what it redelivers
//! afterwards sits before the position the batch would commit, so it would be skipped. Committing the batch would
//! advance the position and acknowledge past the gap: the missing events would be lost for good.
//!
//! So the batch holds that partition back (writes none of its messages, saves no position, acknowledges nothing
//! for it) and reports the gap; the source then rewinds the partition (it rebuilds the consumer, and the broker
//! delivers again from the last acknowledged entry). A gap that persists for `accept_after`, delivery starting at
//! the same message again (the subscription's cursor itself is past those entries: an operator skipped or expired
//! them), is accepted: logged as an error, counted, and the messages after it written.
//!
//! Not seen: a gap across ledgers (the last entry of the previous ledger is unknown here), and the rest of an entry
//! the committed position ends inside of when the next entry follows (the entry's size is not stored). Mistaken
//! for a gap: entries the broker never dispatches (replicated-subscription snapshots, transaction markers); each
//! would hold the partition back for `accept_after`, so on such topics the check is turned off
//! (`gap_accept_after: 0`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::decode::DecodedMessage;
use crate::message::MessageId;
use crate::metrics as m;
use crate::store::position::Positions;

/// How long a gap must persist before it is accepted (by default).
pub const ACCEPT_AFTER: Duration = Duration::from_secs(30);

/// Whether `next`, the first message after `committed` that a batch holds for a partition, leaves a gap.
pub fn leaves_gap(committed: MessageId, next: MessageId) -> bool {
    if committed.ledger < 0 || next.ledger != committed.ledger {
        return false;
    }
    let same_entry = next.entry == committed.entry && next.batch_index == committed.batch_index + 1;
    let next_entry = next.entry == committed.entry + 1 && next.batch_index == 0;
    !(same_entry || next_entry)
}

/// What [`GapGuard::check`] decided for a batch.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Indexes (in the batch) of messages not to write: those after a gap, and repeats of messages the batch
    /// already holds.
    pub excluded: HashSet<usize>,
    /// How many of `excluded` are after a gap (held back).
    pub held_back: usize,
    /// Partitions with messages held back, each with the position the batch leaves committed: deliver again from
    /// there.
    pub gaps: Positions,
}

/// The gaps a writer is holding partitions back for, and since when.
#[derive(Debug)]
pub struct GapGuard {
    accept_after: Duration,
    /// Partition → (position left committed, first message after the gap, since when).
    held: Mutex<HashMap<String, (MessageId, MessageId, Instant)>>,
}

impl GapGuard {
    pub fn new(accept_after: Duration) -> Self {
        GapGuard { accept_after, held: Mutex::new(HashMap::new()) }
    }

    /// Follows each partition's messages in batch order from its committed position: a message that continues
    /// the chain extends it, one at or before its end is a repeat, one further on is after a gap and held back
    /// unless the chain reaches it later in the batch (a redelivery behind messages that came too early). A gap
    /// that persisted for `accept_after`, starting at the same message, is accepted instead.
    pub fn check(&self, messages: &[DecodedMessage], committed: &Positions) -> Verdict {
        // Partition → (its committed position, the end of the chain followed from it).
        let mut ends: foldhash::HashMap<&str, (MessageId, MessageId)> = Default::default();
        let mut jumps: foldhash::HashMap<&str, Vec<usize>> = Default::default();
        let mut out = Verdict::default();
        for (i, msg) in messages.iter().enumerate() {
            let p = &msg.raw.position;
            let topic = p.source.as_ref();
            let (done, end) = match ends.entry(topic) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => match committed.get(topic) {
                    Some(&done) => e.insert((done, done)),
                    None => continue,
                },
            };
            if p.id <= *end {
                if p.id > *done {
                    out.excluded.insert(i);
                }
            } else if leaves_gap(*end, p.id) {
                jumps.entry(topic).or_default().push(i);
            } else {
                *end = p.id;
            }
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, (_, end)) in &ends {
            // Messages after a gap that the chain reached later in the batch are repeats.
            let (after, repeats): (Vec<usize>, Vec<usize>) =
                jumps.remove(topic).unwrap_or_default().into_iter().partition(|i| messages[*i].raw.position.id > *end);
            out.excluded.extend(repeats);
            let Some(&first) = after.first() else {
                held.remove(*topic);
                continue;
            };
            let next = messages[first].raw.position.id;
            let (first_next, since) = match held.get(*topic) {
                Some((at, first_next, since)) if at == end => (*first_next, *since),
                _ => {
                    tracing::warn!(
                        topic, committed = %end, next = %next,
                        "gap in delivery: entries after the committed position did not arrive; holding the \
                         partition back until the broker delivers them"
                    );
                    m::delivery_gap("held");
                    let now = Instant::now();
                    held.insert(topic.to_string(), (*end, next, now));
                    (next, now)
                }
            };
            // Accepted only when delivery starts at the same place again: what the broker's cursor points at.
            if next == first_next && since.elapsed() >= self.accept_after {
                tracing::error!(
                    topic, committed = %end, next = %next, waited = ?since.elapsed(),
                    "gap in delivery persists (the subscription's cursor is past those entries: skipped or expired?); \
                     accepting it and writing what follows"
                );
                m::delivery_gap("accepted");
                held.remove(*topic);
                continue;
            }
            out.held_back += after.len();
            out.excluded.extend(after);
            out.gaps.insert(topic.to_string(), *end);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::message::{Position, RawMessage};

    fn id(l: i64, e: i64, b: i32) -> MessageId {
        MessageId::new(l, e, b)
    }

    fn msg(topic: &str, id: MessageId) -> DecodedMessage {
        let raw = RawMessage {
            position: Position { source: Arc::from(topic), id },
            entry_size: 1,
            publish_time: 0,
            payload: Bytes::from_static(b""),
        };
        crate::decode::decode(raw)
    }

    #[test]
    fn only_the_next_message_of_the_same_ledger_continues_the_committed_position() {
        let c = id(7, 10, 2);
        assert!(!leaves_gap(c, id(7, 10, 3)), "the next message of the entry");
        assert!(!leaves_gap(c, id(7, 11, 0)), "the next entry");
        assert!(leaves_gap(c, id(7, 12, 0)), "an entry missing");
        assert!(leaves_gap(c, id(7, 10, 4)), "a message of the entry missing");
        assert!(leaves_gap(c, id(7, 11, 1)), "the start of the next entry missing");
        assert!(!leaves_gap(c, id(8, 0, 0)), "another ledger: unknown, not a gap");
        assert!(!leaves_gap(c, id(8, 5, 0)), "another ledger: unknown, not a gap");
        assert!(!leaves_gap(id(-1, -1, -1), id(7, 30, 0)), "nothing committed yet");
    }

    /// The positions of the messages `check` lets through, per partition, in batch order.
    fn kept(batch: &[DecodedMessage], verdict: &Verdict) -> Vec<(String, MessageId)> {
        let through = (0..batch.len()).filter(|i| !verdict.excluded.contains(i));
        through.map(|i| (batch[i].raw.position.source.to_string(), batch[i].raw.position.id)).collect()
    }

    #[test]
    fn a_partition_with_a_gap_is_held_back_until_the_gap_persists() {
        let guard = GapGuard::new(Duration::from_millis(200));
        let committed: Positions =
            [("p0".to_string(), id(7, 10, 0)), ("p1".to_string(), id(9, 3, 0))].into_iter().collect();
        // p0 continues (a redelivered message first, then the next entry); p1 jumps from entry 3 to entry 6.
        let batch =
            vec![msg("p0", id(7, 10, 0)), msg("p0", id(7, 11, 0)), msg("p1", id(9, 6, 0)), msg("p1", id(9, 7, 0))];
        let v = guard.check(&batch, &committed);
        assert_eq!(v.gaps, [("p1".to_string(), id(9, 3, 0))].into_iter().collect::<Positions>());
        assert_eq!((v.held_back, kept(&batch, &v).len()), (2, 2));
        // Still held while the gap is young; the entries arriving end it.
        assert_eq!(guard.check(&batch, &committed).gaps.len(), 1);
        assert!(guard.check(&[msg("p1", id(9, 4, 0))], &committed).gaps.is_empty());
        // A gap that persists past `accept_after`, delivery starting at the same message, is accepted.
        assert_eq!(guard.check(&batch, &committed).gaps.len(), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(guard.check(&batch[3..], &committed).gaps.len(), 1, "starts later: not where the cursor is");
        let v = guard.check(&batch, &committed);
        assert!(v.gaps.is_empty() && v.excluded.is_empty(), "accepted after 200 ms");
        // Partitions without a committed position are not checked.
        assert!(guard.check(&[msg("p2", id(1, 50, 0))], &committed).excluded.is_empty());
    }

    #[test]
    fn messages_that_came_too_early_give_way_to_the_redelivery_behind_them() {
        let guard = GapGuard::new(Duration::from_secs(3600));
        let committed: Positions = [("p".to_string(), id(1, 2, 0))].into_iter().collect();
        let ids = [5, 6, 3, 4, 5, 6, 4, 7];
        let batch: Vec<DecodedMessage> = ids.iter().map(|e| msg("p", id(1, *e, 0))).collect();
        let v = guard.check(&batch, &committed);
        assert!(v.gaps.is_empty(), "the chain reaches 7");
        let got: Vec<i64> = kept(&batch, &v).iter().map(|(_, m)| m.entry).collect();
        assert_eq!(got, vec![3, 4, 5, 6, 7], "each message once, in order");
        // A gap after part of the chain: the chain commits, the rest waits for the next delivery from its end.
        let batch: Vec<DecodedMessage> = [3, 4, 8, 9].iter().map(|e| msg("p", id(1, *e, 0))).collect();
        let v = guard.check(&batch, &committed);
        assert_eq!(v.gaps, [("p".to_string(), id(1, 4, 0))].into_iter().collect::<Positions>());
        assert_eq!(kept(&batch, &v).len(), 2);
    }
}
