//! Batch: gathers decoded messages until a batch is full — by events, by bytes, or by time since its first message,
//! whichever comes first (docs/compatibility.md D23) — and hands it on ([`Batch`], the type the later stages work on).
//!
//! A batch always holds whole messages, so one message larger than the limits makes a batch of its own. The
//! batcher runs in its own task and awaits the caller's `finish` step for each batch (the pipeline passes
//! conversion, which it runs off the runtime's threads): while the writer stores batch N, batch N+1 is decoded,
//! gathered and converted.
//!
//! An idle writer does not wait for the time limit: once a batch is [`EAGER_AFTER`] old it is sent as soon as the
//! writer says it is idle ([`WriterIdle`]). Under light load a message then waits about `EAGER_AFTER` plus one
//! write instead of the whole `max_wait`; under load the writer is rarely idle, so batches still fill up.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::changes::RowChanges;
use crate::decode::{DecodedMessage, decode, event_kind};
use crate::message::RawMessage;

/// A batch of whole messages, in stream order, and (once converted) their row changes.
pub struct Batch {
    pub messages: Vec<DecodedMessage>,
    /// Empty until the convert stage has run (`Converter::convert_batch`).
    pub changes: RowChanges,
}

impl Batch {
    /// An unconverted batch.
    pub fn new(messages: Vec<DecodedMessage>) -> Self {
        Batch { messages, changes: RowChanges::default() }
    }
}

/// When a batch is cut.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// A batch being gathered.
pub struct Builder {
    limits: Limits,
    messages: Vec<DecodedMessage>,
    events: usize,
    bytes: usize,
    opened: Option<Instant>,
    /// Events per kind in the open batch, counted in the metrics once per batch (a counter lookup per message
    /// was a measurable share of the ingester's CPU).
    kinds: Vec<(&'static str, u64)>,
}

impl Builder {
    pub fn new(limits: Limits) -> Self {
        Builder { limits, messages: Vec::new(), events: 0, bytes: 0, opened: None, kinds: Vec::new() }
    }

    pub fn push(&mut self, msg: DecodedMessage) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.events += msg.event_count();
        self.bytes += msg.raw.payload.len();
        count_kinds(&msg, &mut self.kinds);
        self.messages.push(msg);
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.events >= self.limits.max_events || self.bytes >= self.limits.max_bytes
    }

    /// When the open batch must be cut, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.max_wait)
    }

    /// Returns the gathered batch (not converted yet), leaving the builder empty.
    pub fn take(&mut self) -> Batch {
        tracing::debug!(
            messages = self.messages.len(),
            events = self.events,
            open_for = ?self.opened.map(|t| t.elapsed()),
            "batch cut"
        );
        crate::metrics::batch_size(self.events, self.bytes);
        crate::metrics::consumed(self.messages.len() as u64, &self.kinds);
        self.kinds.clear();
        // The next batch is most likely about as large: reserving that much up front spares growing the vector
        // by reallocating and copying it as it fills (2-3% of the ingester's CPU on a backlog, in perf).
        let next = Vec::with_capacity(self.messages.len());
        let messages = std::mem::replace(&mut self.messages, next);
        self.events = 0;
        self.bytes = 0;
        self.opened = None;
        Batch::new(messages)
    }
}

/// Age at which an open batch is sent to a writer that is idle (see the module doc).
pub const EAGER_AFTER: Duration = Duration::from_millis(250);

/// The writer's side of the idle signal: `true` while it waits for a batch with none queued.
pub type WriterIdle = watch::Sender<bool>;

/// The batch task: reads raw messages, in chunks as the router hands them on, until the input closes or `cancel`
/// fires, and sends each batch through `finish` (conversion, in the pipeline). On cancellation the open batch is
/// still sent, so it can be stored if there is time. `idle` is the writer's [`WriterIdle`] signal, if it gives one.
pub async fn run<F, Fut>(
    mut input: mpsc::Receiver<Vec<RawMessage>>,
    output: mpsc::Sender<Batch>,
    mut idle: Option<watch::Receiver<bool>>,
    finish: F,
    limits: Limits,
    cancel: CancellationToken,
) where
    F: Fn(Batch) -> Fut,
    Fut: Future<Output = Batch>,
{
    let mut builder = Builder::new(limits);
    // Whether the writer is idle, as last signalled; a batch just sent makes it busy until it says otherwise.
    let mut writer_idle = false;
    // Room for the open batch in the writer's queue, taken before its first message is decoded: a batch is
    // gathered only once the previous one has been handed on, so per lane at most two are in memory (one being
    // gathered or converted, one being stored) and the source is held back meanwhile.
    let mut slot: Option<mpsc::Permit<'_, Batch>> = None;
    loop {
        let deadline = match builder.opened {
            Some(opened) if writer_idle => Some(opened + EAGER_AFTER.min(limits.max_wait)),
            _ => builder.deadline(),
        };
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            _ = sleep_until(deadline) => {
                writer_idle = false;
                if !hand_on(&mut slot, &output, finish(builder.take()).await).await {
                    return;
                }
                continue;
            }
            changed = changed(&mut idle) => {
                match changed {
                    Some(now_idle) => writer_idle = now_idle,
                    None => idle = None,
                }
                continue;
            }
            chunk = input.recv() => chunk,
        };
        match next {
            Some(chunk) => {
                for raw in chunk {
                    if slot.is_none() {
                        match output.reserve().await {
                            Ok(permit) => slot = Some(permit),
                            Err(_) => return,
                        }
                    }
                    builder.push(decode(raw));
                    if builder.is_full() {
                        writer_idle = false;
                        if !hand_on(&mut slot, &output, finish(builder.take()).await).await {
                            return;
                        }
                    }
                }
            }
            None => {
                if !builder.is_empty() {
                    hand_on(&mut slot, &output, finish(builder.take()).await).await;
                }
                return;
            }
        }
    }
}

/// Sends a batch into the room taken for it (or, without one, waits for room); `false` once the writer is gone.
async fn hand_on<'a>(
    slot: &mut Option<mpsc::Permit<'a, Batch>>,
    output: &'a mpsc::Sender<Batch>,
    batch: Batch,
) -> bool {
    let permit = match slot.take() {
        Some(permit) => permit,
        None => match output.reserve().await {
            Ok(permit) => permit,
            Err(_) => return false,
        },
    };
    permit.send(batch);
    true
}

/// The writer's next idle signal (`None` once the writer is gone); never completes without a signal.
async fn changed(idle: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match idle {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Adds the message's events to `counts` (events per kind).
fn count_kinds(msg: &DecodedMessage, counts: &mut Vec<(&'static str, u64)>) {
    if let Ok(seq) = msg.body().as_ref() {
        for event in &seq.events {
            let kind = event_kind(event);
            match counts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::message::{MessageId, Position};

    fn message(i: i64) -> RawMessage {
        RawMessage {
            position: Position { source: Arc::from("t"), id: MessageId::new(1, i, 0) },
            entry_size: 1,
            publish_time: 0,
            payload: Bytes::from_static(b"not protobuf"),
        }
    }

    /// A batcher with a long time limit, its input, its output and the writer's idle signal.
    fn batcher() -> (mpsc::Sender<Vec<RawMessage>>, mpsc::Receiver<Batch>, WriterIdle, CancellationToken) {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel(1);
        let (idle_tx, idle_rx) = watch::channel(false);
        let limits = Limits { max_events: 1000, max_bytes: 1 << 20, max_wait: Duration::from_secs(600) };
        let cancel = CancellationToken::new();
        tokio::spawn(run(in_rx, out_tx, Some(idle_rx), std::future::ready, limits, cancel.clone()));
        (in_tx, out_rx, idle_tx, cancel)
    }

    #[tokio::test]
    async fn an_idle_writer_gets_the_open_batch_without_waiting_for_the_time_limit() {
        let (input, mut output, idle, _cancel) = batcher();
        input.send(vec![message(0)]).await.unwrap();
        input.send(vec![message(1)]).await.unwrap();
        idle.send_replace(true);
        let started = Instant::now();
        let batch = tokio::time::timeout(Duration::from_secs(60), output.recv()).await.expect("sent early").unwrap();
        assert_eq!(batch.messages.len(), 2);
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_busy_writer_lets_the_batch_grow_until_it_is_idle() {
        let (input, mut output, idle, _cancel) = batcher();
        input.send(vec![message(0)]).await.unwrap();
        // Well past EAGER_AFTER: the writer is busy, so the batch stays open.
        let early = tokio::time::timeout(EAGER_AFTER * 5, output.recv()).await;
        assert!(early.is_err(), "a batch was cut while the writer was busy");
        input.send(vec![message(1)]).await.unwrap();
        tokio::time::sleep(EAGER_AFTER).await;
        idle.send_replace(true);
        let batch =
            tokio::time::timeout(Duration::from_secs(60), output.recv()).await.expect("sent once idle").unwrap();
        assert_eq!(batch.messages.len(), 2, "both messages in one batch");
    }

    #[tokio::test]
    async fn messages_taken_in_one_go_are_cut_into_full_batches_in_order() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        // Two of the 12-byte test payloads fill a batch.
        let limits = Limits { max_events: 1000, max_bytes: 24, max_wait: Duration::from_secs(600) };
        // All five come in one chunk, as the router hands on what it took in one go.
        in_tx.send((0..5).map(message).collect()).await.unwrap();
        drop(in_tx);
        run(in_rx, out_tx, None, std::future::ready, limits, CancellationToken::new()).await;
        let mut cuts = Vec::new();
        while let Some(batch) = out_rx.recv().await {
            cuts.push(batch.messages.iter().map(|m| m.raw.position.id.entry).collect::<Vec<_>>());
        }
        assert_eq!(cuts, vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[tokio::test]
    async fn a_batch_is_begun_only_once_the_previous_one_is_in_the_writers_queue() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let limits = Limits { max_events: 1000, max_bytes: 24, max_wait: Duration::from_secs(600) };
        let converted = Arc::new(AtomicUsize::new(0));
        let finish = {
            let converted = converted.clone();
            move |b| {
                converted.fetch_add(1, Ordering::SeqCst);
                std::future::ready(b)
            }
        };
        tokio::spawn(run(in_rx, out_tx, None, finish, limits, CancellationToken::new()));
        for i in 0..6 {
            in_tx.send(vec![message(i)]).await.unwrap();
        }
        // The writer takes nothing: the first batch fills its queue, and the second is not even gathered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(converted.load(Ordering::SeqCst), 1);
        for (taken, first) in [(1, 0), (2, 2), (3, 4)] {
            let batch = tokio::time::timeout(Duration::from_secs(60), out_rx.recv()).await.unwrap().unwrap();
            assert_eq!(batch.messages[0].raw.position.id.entry, first);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(converted.load(Ordering::SeqCst), (taken + 1).min(3), "after {taken} taken");
        }
    }

    #[tokio::test]
    async fn without_an_idle_signal_the_time_limit_applies() {
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let limits = Limits { max_events: 1000, max_bytes: 1 << 20, max_wait: Duration::from_millis(300) };
        tokio::spawn(run(in_rx, out_tx, None, std::future::ready, limits, CancellationToken::new()));
        let started = Instant::now();
        in_tx.send(vec![message(0)]).await.unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(60), out_rx.recv()).await.unwrap().unwrap();
        assert_eq!(batch.messages.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(300), "cut before the time limit");
    }
}
