//! The replay's source: Pulsar **readers**, one per partition, feeding the same batch → convert → store stages as
//! the service (`pipeline::run_with`), over each partition's [`Window`].
//!
//! Why readers: a reader is a non-durable, exclusive subscription with a name of its own. The broker keeps no cursor
//! for it in its metadata, retains nothing on its account, and drops it when the reader disconnects (also when the
//! process is killed). So a replay never touches the live subscription (its cursor, backlog, consumers or
//! Failover assignment) and leaves nothing behind; a uniquely named durable subscription would hold the topic's
//! backlog for as long as a killed replay failed to delete it.
//!
//! Each partition's reader runs in its own task (rebuilt with backoff when its stream fails, from the last entry it
//! delivered). The source forwards a message when it lies in its partition's window and after what it already
//! forwarded (a rebuilt reader delivers again), stops reading a partition after the last message of its end entry,
//! and ends the replay (fires the pipeline's token) once every partition's last forwarded message has committed.
//! Progress is counted from the commit reports into a shared [`Tally`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::message::proto::MessageIdData;
use pulsar::message::proto::command_subscribe::SubType;
use pulsar::{Authentication, ConsumerOptions, OperationRetryOptions, Pulsar, TokioExecutor};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::plan::Window;
use super::progress::Tally;
use crate::config::Config;
use crate::message::{MessageId, Position, RawMessage, Ts};
use crate::source::{CommitReport, Committed};

type Message = pulsar::consumer::Message<Vec<u8>>;

/// Messages buffered between the partition readers and the source.
const INBOX: usize = 256;

/// A Pulsar client as the configuration describes it (URL, TLS trust, JWT).
pub async fn client(config: &Config) -> anyhow::Result<Pulsar<TokioExecutor>> {
    let p = &config.pulsar;
    let mut builder =
        Pulsar::builder(p.url.clone(), TokioExecutor).with_operation_retry_options(OperationRetryOptions {
            operation_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(2),
            max_retries: Some(10),
        });
    if let Some(path) = p.tls_trust_certs_file_path.as_ref().filter(|_| p.url.starts_with("pulsar+ssl://")) {
        builder =
            builder.with_certificate_chain_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    if p.authentication_enabled {
        let token = match (&p.jwt_token_path, &p.jwt_token) {
            (Some(path), _) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read pulsar.jwt_token_path {}", path.display()))?,
            (None, Some(token)) => token.clone(),
            (None, None) => anyhow::bail!("pulsar authentication needs jwt_token_path or jwt_token"),
        };
        builder = builder.with_auth(Authentication { name: "token".into(), data: token.trim().as_bytes().to_vec() });
    }
    builder.build().await.with_context(|| format!("cannot connect to Pulsar at {}", p.url))
}

/// Whether a delivered message is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Forward,
    /// Before the window's start, or delivered again.
    Skip,
    /// Past the window's end: the partition is finished.
    Past,
}

/// One partition's progress through its window.
#[derive(Debug)]
pub struct Part {
    pub window: Window,
    source: Arc<str>,
    /// The highest message forwarded.
    last: Option<MessageId>,
    /// `Some(last forwarded)` once nothing more will be forwarded.
    stop: Option<Option<MessageId>>,
    /// The highest committed position reported.
    pub committed: Option<MessageId>,
    /// Forwarded and not yet committed: key, events, whether it is the last message of its entry.
    inflight: VecDeque<(MessageId, u64, bool)>,
}

/// What a commit report newly covers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub messages: u64,
    pub events: u64,
    pub entries: u64,
}

impl Part {
    pub fn new(window: Window) -> Part {
        let stop = window.is_empty().then_some(None);
        let source = window.partition.as_str().into();
        Part { window, source, last: None, stop, committed: None, inflight: VecDeque::new() }
    }

    /// Decides about a delivered message `key` of an entry holding `entry_size` messages.
    pub fn admit(&mut self, key: MessageId, entry_size: i32) -> Admit {
        if self.stop.is_some()
            || self.window.start.is_some_and(|s| key < s)
            || self.last.is_some_and(|last| key <= last)
        {
            return Admit::Skip;
        }
        let Some(end) = self.window.end else {
            self.stop = Some(self.last);
            return Admit::Past;
        };
        if key.entry_id() > end.entry_id() {
            self.stop = Some(self.last);
            return Admit::Past;
        }
        self.last = Some(key);
        if key.entry_id() == end.entry_id() && key.batch_index >= entry_size - 1 {
            self.stop = Some(Some(key));
        }
        Admit::Forward
    }

    /// Records a forwarded message's events.
    fn forwarded(&mut self, key: MessageId, events: u64, entry_size: i32) {
        self.inflight.push_back((key, events, key.batch_index >= entry_size - 1));
    }

    /// Records that everything up to `key` committed.
    pub fn commit(&mut self, key: MessageId) -> Done {
        let mut done = Done::default();
        if self.committed.is_none_or(|c| key > c) {
            self.committed = Some(key);
        }
        while let Some(&(k, events, entry_end)) = self.inflight.front() {
            if k > key {
                break;
            }
            self.inflight.pop_front();
            done.messages += 1;
            done.events += events;
            done.entries += u64::from(entry_end);
        }
        done
    }

    /// Nothing more to read, and all that was forwarded committed.
    pub fn complete(&self) -> bool {
        match self.stop {
            None => false,
            Some(None) => true,
            Some(Some(last)) => self.committed.is_some_and(|c| c >= last),
        }
    }

    pub fn reading(&self) -> bool {
        self.stop.is_none()
    }
}

/// Counts the events of a serialized `EventSequence` (field 5) without decoding them; for progress only.
pub fn count_events(mut buf: &[u8]) -> u64 {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut events = 0;
    while let Some(key) = varint(&mut buf) {
        let skip = match key & 7 {
            0 => varint(&mut buf).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut buf).and_then(|n| usize::try_from(n).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip.filter(|n| *n <= buf.len()) else { break };
        if key >> 3 == 5 && key & 7 == 2 {
            events += 1;
        }
        buf = &buf[skip..];
    }
    events
}

/// The replay source.
pub struct ReaderSource {
    client: Pulsar<TokioExecutor>,
    parts: Vec<Part>,
    tally: Arc<Mutex<Tally>>,
    queue: u32,
    reader_name: String,
}

impl ReaderSource {
    pub fn new(client: Pulsar<TokioExecutor>, windows: Vec<Window>, tally: Arc<Mutex<Tally>>, queue: u32) -> Self {
        let suffix = uuid_suffix();
        ReaderSource {
            client,
            parts: windows.into_iter().map(Part::new).collect(),
            tally,
            queue: queue.max(1),
            reader_name: format!("lookout-ingester-replay-{suffix}"),
        }
    }

    /// Runs as [`crate::source::Source::run`] does: messages out, commit reports in, until `cancel` fires and the
    /// writer hangs up. Fires `cancel` itself when every partition is complete (the replay's end).
    pub async fn run(
        mut self,
        out: mpsc::Sender<RawMessage>,
        mut commits: mpsc::Receiver<CommitReport>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let (inbox_tx, mut inbox) = mpsc::channel::<(usize, Message)>(INBOX);
        let mut readers: JoinSet<()> = JoinSet::new();
        let mut handles = HashMap::new();
        for (i, part) in self.parts.iter().enumerate() {
            if part.reading() {
                let task = read_partition(
                    self.client.clone(),
                    i,
                    part.window.clone(),
                    self.reader_name.clone(),
                    self.queue,
                    inbox_tx.clone(),
                );
                handles.insert(i, readers.spawn(task));
            }
        }
        drop(inbox_tx);
        self.publish_progress();
        let mut out = Some(out);
        let mut inbox_open = true;
        let mut pending: Option<(usize, RawMessage, u64)> = None;
        loop {
            if self.parts.iter().all(Part::complete) && !cancel.is_cancelled() {
                self.tally.lock().expect("tally").complete = true;
                tracing::info!("replay: every partition reached its end");
                cancel.cancel();
            }
            let consuming = out.is_some();
            let mut stopping = false;
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if consuming => {
                    stopping = true;
                    pending = None;
                    readers.abort_all();
                }
                commit = commits.recv() => match commit {
                    Some(report) => self.committed(report.committed),
                    None => break,
                },
                permit = reserve(out.as_ref()), if pending.is_some() => {
                    let permit = permit.map_err(|()| anyhow::anyhow!("replay: the batch stage stopped"))?;
                    if let Some((i, raw, events)) = pending.take() {
                        let key = raw.position.id;
                        self.parts[i].forwarded(key, events, raw.entry_size);
                        permit.send(raw);
                    }
                }
                next = inbox.recv(), if consuming && pending.is_none() && inbox_open => {
                    // `None`: every reader task has ended, which happens once each partition stopped reading.
                    let Some((i, msg)) = next else {
                        inbox_open = false;
                        continue;
                    };
                    let part = &mut self.parts[i];
                    let raw = raw_message(msg, &part.source);
                    match part.admit(raw.position.id, raw.entry_size) {
                        Admit::Forward => {
                            let events = count_events(&raw.payload);
                            pending = Some((i, raw, events));
                        }
                        Admit::Skip | Admit::Past => {}
                    }
                    if !self.parts[i].reading() && let Some(handle) = handles.remove(&i) {
                        tracing::debug!(partition = %self.parts[i].window.partition, "end of the window reached");
                        handle.abort();
                    }
                }
            }
            if stopping {
                // Dropping the sender ends the batcher's input: it flushes its open batch.
                out = None;
            }
        }
        readers.abort_all();
        Ok(())
    }

    fn committed(&mut self, committed: Committed) {
        let mut done = Done::default();
        for (topic, key) in committed {
            if let Some(part) = self.parts.iter_mut().find(|p| *p.source == *topic) {
                let d = part.commit(key);
                done.messages += d.messages;
                done.events += d.events;
                done.entries += d.entries;
            }
        }
        let mut t = self.tally.lock().expect("tally");
        t.messages += done.messages;
        t.events += done.events;
        t.entries += done.entries;
        t.partitions_done = self.parts.iter().filter(|p| p.complete()).count();
        t.positions = self.parts.iter().map(|p| (p.window.partition.clone(), p.committed)).collect();
    }

    fn publish_progress(&self) {
        let mut t = self.tally.lock().expect("tally");
        t.partitions = self.parts.len();
        t.entries_total = self.parts.iter().map(|p| p.window.entries).sum();
        t.partitions_done = self.parts.iter().filter(|p| p.complete()).count();
    }
}

async fn reserve(out: Option<&mpsc::Sender<RawMessage>>) -> Result<mpsc::Permit<'_, RawMessage>, ()> {
    match out {
        Some(tx) => tx.reserve().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

fn uuid_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A delivered message as the stages take it. Ledger and entry ids are Java longs sent as uint64.
fn raw_message(msg: Message, source: &Arc<str>) -> RawMessage {
    let id = &msg.message_id.id;
    let entry_size = msg.message_id.batch_size.unwrap_or(1).max(1);
    let batch_index = if msg.message_id.batch_size.is_some() { id.batch_index.unwrap_or(0).max(0) } else { 0 };
    let publish_time: Ts =
        i64::try_from(msg.payload.metadata.publish_time).ok().and_then(|ms| ms.checked_mul(1000)).unwrap_or(0);
    RawMessage {
        position: Position {
            source: source.clone(),
            id: MessageId::new(id.ledger_id as i64, id.entry_id as i64, batch_index),
        },
        entry_size: entry_size.max(batch_index + 1),
        publish_time,
        payload: Bytes::from(msg.payload.data),
    }
}

/// Reads one partition from its window's start until aborted, rebuilding the reader with backoff when its stream
/// fails or ends; a rebuilt reader starts again at the last entry delivered.
async fn read_partition(
    client: Pulsar<TokioExecutor>,
    index: usize,
    window: Window,
    name: String,
    queue: u32,
    inbox: mpsc::Sender<(usize, Message)>,
) {
    let mut resume = window.start.map(MessageId::entry_id);
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut options = ConsumerOptions::default().with_receiver_queue_size(queue);
        options = match resume {
            // The broker's start for a reader may be exclusive or (for batch-aware ids) one entry earlier: asking
            // for the entry before covers both, and what comes before the start is skipped by `Part::admit`.
            Some((ledger, entry)) => options.starting_on_message(MessageIdData {
                ledger_id: ledger as u64,
                entry_id: (entry - 1) as u64,
                ..Default::default()
            }),
            None => options.with_initial_position(InitialPosition::Earliest),
        };
        let built = client
            .consumer()
            .with_topic(window.partition.clone())
            .with_subscription(format!("{name}-{index}"))
            .with_subscription_type(SubType::Exclusive)
            .with_consumer_name(name.clone())
            .with_batch_size(queue)
            .with_options(options)
            .into_reader::<Vec<u8>>()
            .await;
        match built {
            Ok(mut reader) => {
                tracing::debug!(partition = %window.partition, ?resume, "reader started");
                backoff = Duration::from_millis(500);
                while let Some(item) = reader.next().await {
                    match item {
                        Ok(msg) => {
                            let id = &msg.message_id.id;
                            resume = Some((id.ledger_id as i64, id.entry_id as i64));
                            if inbox.send((index, msg)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(partition = %window.partition, error = %e, "reader failed; rebuilding it");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(partition = %window.partition, error = %e, retry_in = ?backoff, "cannot start a reader")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn part(start: Option<MessageId>, end: Option<MessageId>) -> Part {
        Part::new(Window { partition: "p".into(), start, end, entries: None })
    }

    #[test]
    fn forwards_the_window_and_stops_after_the_end_entry() {
        let mut p = part(Some(MessageId::new(5, 2, 1)), Some(MessageId::new(5, 4, 0)));
        assert_eq!(p.admit(MessageId::new(5, 1, 0), 1), Admit::Skip, "before the start");
        assert_eq!(p.admit(MessageId::new(5, 2, 0), 3), Admit::Skip, "before the start, same entry");
        assert_eq!(p.admit(MessageId::new(5, 2, 1), 3), Admit::Forward);
        assert_eq!(p.admit(MessageId::new(5, 2, 1), 3), Admit::Skip, "delivered again");
        assert_eq!(p.admit(MessageId::new(5, 2, 2), 3), Admit::Forward);
        assert_eq!(p.admit(MessageId::new(5, 4, 0), 2), Admit::Forward);
        assert!(p.reading(), "the end entry holds two messages");
        assert_eq!(p.admit(MessageId::new(5, 4, 1), 2), Admit::Forward);
        assert!(!p.reading());
        assert_eq!(p.admit(MessageId::new(5, 5, 0), 1), Admit::Skip);
        assert!(!p.complete());
        p.commit(MessageId::new(5, 4, 0));
        assert!(!p.complete());
        p.commit(MessageId::new(5, 4, 1));
        assert!(p.complete());
    }

    #[test]
    fn a_message_past_the_end_finishes_the_partition() {
        let mut p = part(None, Some(MessageId::new(5, 4, 0)));
        assert_eq!(p.admit(MessageId::new(5, 3, 0), 1), Admit::Forward);
        assert_eq!(p.admit(MessageId::new(6, 0, 0), 1), Admit::Past, "the end entry was never delivered");
        assert!(!p.reading());
        p.commit(MessageId::new(5, 3, 0));
        assert!(p.complete());
        let mut empty = part(None, None);
        assert!(!empty.reading() && empty.complete());
        assert_eq!(empty.admit(MessageId::new(1, 0, 0), 1), Admit::Skip);
    }

    #[test]
    fn commits_count_messages_events_and_entries() {
        let mut p = part(None, Some(MessageId::new(9, 9, 0)));
        for (key, size) in [(MessageId::new(1, 0, 0), 2), (MessageId::new(1, 0, 1), 2), (MessageId::new(1, 1, 0), 1)] {
            assert_eq!(p.admit(key, size), Admit::Forward);
            p.forwarded(key, 3, size);
        }
        assert_eq!(p.commit(MessageId::new(1, 0, 0)), Done { messages: 1, events: 3, entries: 0 });
        assert_eq!(p.commit(MessageId::new(1, 1, 0)), Done { messages: 2, events: 6, entries: 2 });
        assert_eq!(p.commit(MessageId::new(1, 1, 0)), Done::default());
        assert_eq!(p.committed, Some(MessageId::new(1, 1, 0)));
    }

    #[test]
    fn events_are_counted_without_decoding() {
        use crate::proto::armadaevents::EventSequence;
        use crate::proto::armadaevents::event_sequence::Event;
        let seq = EventSequence {
            queue: "q".into(),
            job_set_name: "s".into(),
            user_id: "u".into(),
            groups: vec!["g".into()],
            events: vec![Event::default(), Event::default(), Event::default()],
        };
        assert_eq!(count_events(&seq.encode_to_vec()), 3);
        assert_eq!(count_events(&[0xff, 0xff]), 0);
        assert_eq!(count_events(&[]), 0);
    }
}
