//! Batch: gathers decoded messages until a batch is full — by events, by bytes, or by time since its first message,
//! whichever comes first (docs/compatibility.md D23) — and hands it on ([`Batch`], the type the later stages work on).
//!
//! A batch always holds whole messages, so one message larger than the limits makes a batch of its own. The
//! batcher runs in its own task, and the caller's `finish` step (the pipeline passes conversion) runs there too:
//! while the writer stores batch N, batch N+1 is decoded, gathered and converted.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
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
}

impl Builder {
    pub fn new(limits: Limits) -> Self {
        Builder { limits, messages: Vec::new(), events: 0, bytes: 0, opened: None }
    }

    pub fn push(&mut self, msg: DecodedMessage) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        self.events += msg.event_count();
        self.bytes += msg.raw.payload.len();
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
        crate::metrics::batch_size(self.events, self.bytes);
        let messages = std::mem::take(&mut self.messages);
        self.events = 0;
        self.bytes = 0;
        self.opened = None;
        Batch::new(messages)
    }
}

/// The batch task: reads raw messages until the input closes or `cancel` fires, and sends each batch through
/// `finish` (conversion, in the pipeline). On cancellation the open batch is still sent, so it can be stored if
/// there is time.
pub async fn run(
    mut input: mpsc::Receiver<RawMessage>,
    output: mpsc::Sender<Batch>,
    finish: impl Fn(Batch) -> Batch,
    limits: Limits,
    cancel: CancellationToken,
) {
    let mut builder = Builder::new(limits);
    loop {
        let deadline = builder.deadline();
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            _ = sleep_until(deadline) => {
                if output.send(finish(builder.take())).await.is_err() {
                    return;
                }
                continue;
            }
            msg = input.recv() => msg,
        };
        match next {
            Some(raw) => {
                let decoded = decode(raw);
                let kinds = event_kinds(&decoded);
                crate::metrics::consumed(1, &kinds);
                builder.push(decoded);
                if builder.is_full() && output.send(finish(builder.take())).await.is_err() {
                    return;
                }
            }
            None => {
                if !builder.is_empty() {
                    let _ = output.send(finish(builder.take())).await;
                }
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn event_kinds(msg: &DecodedMessage) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    if let Ok(seq) = &msg.body {
        for event in &seq.events {
            let kind = event_kind(event);
            match counts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
    }
    counts
}
