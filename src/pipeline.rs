//! Pipeline: wires source → batch → writer, and the writer's commits back to the source for acknowledgement.
//!
//! ```text
//!                         ┌─ lane 0: batch::run ──Batch (1 slot)──▶ writer (Writer::write) ─┐
//!  source ──▶ router ─────┤                                                                ├─┐
//!    ▲     (by partition) └─ lane 1: batch::run ──Batch (1 slot)──▶ writer (Writer::write) ─┘ │
//!    └─────────────── commit reports: committed positions, gaps (bounded) ──────────────────────┘
//! ```
//!
//! Lanes (`writers`, default 2) let a partitioned topic be written in parallel, one transaction per batch per lane
//! on its own connection, as Armada's ingester writes its tables in parallel. A partition always goes to the same
//! lane, so its messages keep their order and each partition's position advances in one place; lanes touch
//! disjoint jobs because a job's events all travel in its job set's partition.
//!
//! Messages cross the stages in groups where they can, because waking a task on another thread costs more than
//! handling a message: the source takes what the Pulsar client has ready in bursts, the router takes what the
//! source queued in one go and hands each lane one chunk of it, and a batcher is woken once per chunk.
//!
//! Every channel is bounded, so memory stays bounded: per lane at most two batches, one being gathered and
//! converted (a batch is begun only once the previous one is in the writer's queue) and one being stored.
//! Decoding and converting batch N+1 overlaps storing batch N; conversion, the pipeline's one long stretch of CPU
//! work, runs on the blocking pool ([`convert`]) so the runtime's threads stay free for I/O.
//!
//! Shutdown (the token fires): the source stops reading, the batcher sends its open batch and ends, the writer
//! stores what it has been given and ends, the source acknowledges what committed and ends. A batch whose store is
//! waiting to be retried when the token fires is abandoned (its transaction never committed; it is not
//! acknowledged, so Pulsar delivers it again and the position table makes that idempotent). The caller bounds the
//! whole drain with `shutdown_timeout`.
//!
//! Also here: the zombie gauge task (active jobs whose latest run finished long ago; and the parked-events gauge).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::{self, Batch, Limits, WriterIdle};
use crate::convert::Converter;
use crate::message::{MessageId, RawMessage, Ts};
use crate::metrics as m;
use crate::source::{CommitReport, Source};
use crate::writer::{StoreError, Writer};

/// Messages buffered between the source and the router.
pub const MESSAGE_CHANNEL: usize = 256;
/// At most this many messages are taken from the source's channel at once, and handed to the lanes as one chunk
/// per lane: a task blocked on a channel is then woken once for many messages, not once per message.
pub const RECV_MANY: usize = 64;
/// Partitions whose lane the router remembers (beyond them it works the lane out per message).
const MAX_KNOWN_PARTITIONS: usize = 64;
/// Chunks buffered between the router and each lane's batcher (at most `RECV_MANY` messages each).
pub const CHUNK_CHANNEL: usize = MESSAGE_CHANNEL / RECV_MANY;
/// Converted batches waiting for the writer: the one being gathered holds this room from its first message, so
/// with the one being stored a lane has at most two batches in memory.
pub const BATCH_CHANNEL: usize = 1;
/// Commit reports waiting for the source.
pub const COMMIT_CHANNEL: usize = 16;

/// Runs the three stages until they have all ended: after `cancel` fires (a clean drain), or when one fails (then
/// the others are cancelled and the first error is returned).
pub async fn run(
    source: Source,
    converter: Converter,
    limits: Limits,
    writer: Arc<Writer>,
    lanes: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_with(|out, commits, cancel| source.run(out, commits, cancel), converter, limits, writer, lanes, cancel).await
}

/// [`run`] fed by any source: `source(out, commits, cancel)` behaves as [`Source::run`] does (sends messages on
/// `out`, takes the commit reports from `commits`, ends once `cancel` fired and `commits` closed). `replay`
/// feeds the same stages from Pulsar readers this way.
pub async fn run_with<S, F>(
    source: S,
    converter: Converter,
    limits: Limits,
    writer: Arc<Writer>,
    lanes: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()>
where
    S: FnOnce(mpsc::Sender<RawMessage>, mpsc::Receiver<CommitReport>, CancellationToken) -> F,
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let lanes = lanes.max(1);
    let (msg_tx, msg_rx) = mpsc::channel::<RawMessage>(MESSAGE_CHANNEL);
    let (commit_tx, commit_rx) = mpsc::channel::<CommitReport>(COMMIT_CHANNEL);

    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let source = source(msg_tx, commit_rx, cancel.clone());
    tasks.spawn(async move { ("source", source.await) });
    let converter = Arc::new(converter);
    let mut lane_inputs = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (lane_tx, lane_rx) = mpsc::channel::<Vec<RawMessage>>(CHUNK_CHANNEL);
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(BATCH_CHANNEL);
        let (idle_tx, idle_rx) = watch::channel(false);
        lane_inputs.push(lane_tx);
        tasks.spawn({
            let (cancel, converter) = (cancel.clone(), converter.clone());
            async move {
                let finish = |b| convert(converter.clone(), b);
                batch::run(lane_rx, batch_tx, Some(idle_rx), finish, limits, cancel).await;
                ("batcher", Ok(()))
            }
        });
        tasks.spawn({
            let (cancel, writer, commit_tx) = (cancel.clone(), writer.clone(), commit_tx.clone());
            async move { ("writer", write_batches(writer, batch_rx, idle_tx, commit_tx, cancel).await) }
        });
    }
    drop(commit_tx);
    tasks.spawn(async move {
        route(msg_rx, lane_inputs).await;
        ("router", Ok(()))
    });

    let mut first_error: Option<anyhow::Error> = None;
    while let Some(joined) = tasks.join_next().await {
        let (stage, result) = match joined {
            Ok(done) => done,
            Err(e) => ("a stage", Err(anyhow::anyhow!("task failed: {e}"))),
        };
        match result {
            Ok(()) if cancel.is_cancelled() => tracing::debug!(stage, "stage finished"),
            Ok(()) => {
                tracing::error!(stage, "stage ended unexpectedly; stopping");
                first_error.get_or_insert_with(|| anyhow::anyhow!("{stage} ended unexpectedly"));
                cancel.cancel();
            }
            Err(e) => {
                tracing::error!(stage, error = format!("{e:#}"), "stage failed; stopping");
                first_error.get_or_insert(e);
                cancel.cancel();
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Converts a batch on the blocking pool: a full batch is tens of milliseconds of CPU, which on a runtime thread
/// would hold up the source, the router and the writers (the runtime may have one thread, `worker_threads`). One
/// hand-off per batch. A panic in conversion goes on in the batcher, as if it had converted the batch itself.
async fn convert(converter: Arc<Converter>, batch: Batch) -> Batch {
    match tokio::task::spawn_blocking(move || converter.convert_batch(batch)).await {
        Ok(converted) => converted,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("conversion did not finish: {e}"),
    }
}

/// Sends each message to its partition's lane; ends (closing every lane) when the source's channel closes.
/// Takes what is queued in one go ([`RECV_MANY`]) and hands it on as one chunk per lane, keeping each partition's
/// order: the source is woken once for many freed slots, and each lane once for many messages.
async fn route(mut input: mpsc::Receiver<RawMessage>, lanes: Vec<mpsc::Sender<Vec<RawMessage>>>) {
    let mut received = Vec::with_capacity(RECV_MANY);
    let mut chunks: Vec<Vec<RawMessage>> = lanes.iter().map(|_| Vec::new()).collect();
    // Each partition's lane, found once: the sources name a partition by one shared string.
    let mut known: Vec<(Arc<str>, usize)> = Vec::new();
    while input.recv_many(&mut received, RECV_MANY).await > 0 {
        for msg in received.drain(..) {
            let source = &msg.position.source;
            let lane = match known.iter().find(|(partition, _)| Arc::ptr_eq(partition, source)) {
                Some((_, lane)) => *lane,
                None => {
                    let lane = lane_of(source, lanes.len());
                    if known.len() < MAX_KNOWN_PARTITIONS {
                        known.push((source.clone(), lane));
                    }
                    lane
                }
            };
            chunks[lane].push(msg);
        }
        for (lane, chunk) in lanes.iter().zip(chunks.iter_mut()) {
            if !chunk.is_empty() && lane.send(std::mem::take(chunk)).await.is_err() {
                return;
            }
        }
    }
}

/// The lane of a partition: its number modulo the lanes for `…-partition-N` topics (so partitions spread evenly),
/// else a stable hash of the topic name.
fn lane_of(partition: &str, lanes: usize) -> usize {
    let number = partition.rsplit_once("-partition-").and_then(|(_, n)| n.parse::<usize>().ok());
    match number {
        Some(n) => n % lanes,
        None => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            partition.hash(&mut h);
            (h.finish() % lanes as u64) as usize
        }
    }
}

/// The writer: stores each batch in one transaction and reports the committed positions to the source.
async fn write_batches(
    writer: Arc<Writer>,
    mut batches: mpsc::Receiver<Batch>,
    idle: WriterIdle,
    commits: mpsc::Sender<CommitReport>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut progress = LagTracker::default();
    loop {
        // Idle only when nothing is queued: the batcher then sends its open batch early (`batch::EAGER_AFTER`).
        if batches.is_empty() {
            idle.send_replace(true);
        }
        let Some(batch) = batches.recv().await else { break };
        idle.send_replace(false);
        if batch.messages.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        match writer.write(&batch, &cancel).await {
            Ok(report) => {
                progress.record(&batch, now_micros());
                tracing::debug!(
                    took = ?started.elapsed(),
                    messages = batch.messages.len(),
                    skipped = report.skipped_messages,
                    held_back = report.held_back_messages,
                    attempts = report.attempts,
                    "batch committed"
                );
                let done = CommitReport { committed: report.committed, gaps: report.gaps };
                if commits.send(done).await.is_err() {
                    tracing::debug!("source gone; commit not acknowledged (it will be redelivered and skipped)");
                }
            }
            Err(StoreError::Cancelled) => {
                m::batch_abandoned();
                tracing::warn!(
                    messages = batch.messages.len(),
                    "shutdown while the batch waited to be retried: abandoned uncommitted and unacknowledged \
                     (Pulsar will deliver it again)"
                );
                return Ok(());
            }
            Err(e) => return Err(anyhow::anyhow!("writer: {e}")),
        }
    }
    Ok(())
}

/// Per partition, the highest position the writer committed, for the latency and lag metrics.
#[derive(Default)]
struct LagTracker {
    /// The highest position recorded per partition (messages the store skipped as already committed are not
    /// measured again). Keyed by the partition's shared name, so recording allocates nothing per message.
    last: foldhash::HashMap<Arc<str>, MessageId>,
}

impl LagTracker {
    /// Records publish→commit latency for each newly committed message and, per partition, the lag at this commit
    /// (commit time minus the publish time of its last message).
    fn record(&mut self, batch: &Batch, now: Ts) {
        let latency = m::publish_to_commit();
        let mut newest: foldhash::HashMap<&str, Ts> = Default::default();
        for msg in &batch.messages {
            let p = &msg.raw.position;
            match self.last.get_mut(p.source.as_ref()) {
                Some(last) if p.id <= *last => continue,
                Some(last) => *last = p.id,
                None => {
                    self.last.insert(p.source.clone(), p.id);
                }
            }
            latency.record(((now - msg.raw.publish_time) as f64 / 1e6).max(0.0));
            let entry = newest.entry(p.source.as_ref()).or_insert(msg.raw.publish_time);
            *entry = (*entry).max(msg.raw.publish_time);
        }
        for (partition, published) in newest {
            m::lag(partition, (now - published) as f64 / 1e6, published as f64 / 1e6);
        }
    }
}

fn now_micros() -> Ts {
    chrono::Utc::now().timestamp_micros()
}

/// Jobs still active (pending, running, leased) whose latest run finished more than the threshold ago.
const ZOMBIES: &str = "
SELECT count(*)
FROM job j
JOIN job_run r ON r.run_id = j.latest_run_id
WHERE j.state IN (2, 3, 8)
  AND r.finished < (now() AT TIME ZONE 'utc') - make_interval(secs => $1)";

/// Runs `work` every `interval`, the first time right away, until `cancel` fires (also while it runs). An interval
/// of 0 never runs it.
async fn every<F, Fut>(interval: Duration, cancel: &CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = work() => {}
        }
    }
}

/// Every `interval` (0 disables it) re-applies the parked events whose parent job or run exists by now
/// ([`Writer::reconcile`]): events parked by a transaction concurrent with the one that created their parent, whose
/// writer stopped before its own check after the commit.
pub async fn parked_sweep(writer: Arc<Writer>, interval: Duration, cancel: CancellationToken) {
    every(interval, &cancel, || async {
        match writer.reconcile(None).await {
            Ok(0) => {}
            Ok(n) => {
                m::reconciled("sweep", n);
                tracing::info!(events = n, "sweep: re-applied parked events whose parent exists now");
            }
            Err(e) => tracing::warn!(error = %e, "parked-event sweep failed (next try in {interval:?})"),
        }
    })
    .await
}

/// Every `interval` (0 disables it) sets the zombie-jobs gauge and the parked-events gauge.
pub async fn zombie_gauge(
    pool: PgPool,
    writer: Arc<Writer>,
    interval: Duration,
    threshold: Duration,
    cancel: CancellationToken,
) {
    every(interval, &cancel, || async {
        match sqlx::query_scalar::<_, i64>(ZOMBIES).bind(threshold.as_secs_f64()).fetch_one(&pool).await {
            Ok(n) => {
                m::zombie_jobs(n);
                if n > 0 {
                    tracing::debug!(zombies = n, "active jobs whose latest run finished long ago");
                }
            }
            Err(e) => tracing::warn!(error = %e, "zombie gauge query failed"),
        }
        match writer.parked_count().await {
            Ok(n) => m::parked_now(n),
            Err(e) => tracing::warn!(error = %e, "parked-events count failed"),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::message::Position;

    fn batch(msgs: &[(&str, i64, i32, Ts)]) -> Batch {
        let messages = msgs
            .iter()
            .map(|(source, entry, index, published)| {
                decode(RawMessage {
                    position: Position { source: (*source).into(), id: MessageId::new(1, *entry, *index) },
                    entry_size: 1,
                    publish_time: *published,
                    payload: bytes::Bytes::new(),
                })
            })
            .collect();
        Batch::new(messages)
    }

    #[test]
    fn partitions_spread_evenly_over_lanes_and_stay_put() {
        let lanes: Vec<usize> =
            (0..4).map(|i| lane_of(&format!("persistent://public/default/events-partition-{i}"), 2)).collect();
        assert_eq!(lanes, vec![0, 1, 0, 1]);
        let plain = lane_of("persistent://public/default/events", 3);
        assert!(plain < 3);
        assert_eq!(plain, lane_of("persistent://public/default/events", 3));
        assert_eq!(lane_of("x-partition-7", 1), 0);
    }

    #[test]
    fn the_zombie_query_lists_the_active_states_with_a_run() {
        use crate::states::{JobState, sql_list};
        let with_run = sql_list(JobState::WITH_RUN.map(JobState::code));
        assert!(ZOMBIES.contains(&format!("j.state IN ({with_run})")), "{ZOMBIES}");
    }

    #[test]
    fn progress_measures_each_message_once() {
        let mut p = LagTracker::default();
        p.record(&batch(&[("a", 1, 0, 10), ("a", 2, 0, 20), ("b", 1, 0, 5)]), 100);
        assert_eq!(p.last.get("a"), Some(&MessageId::new(1, 2, 0)));
        assert_eq!(p.last.get("b"), Some(&MessageId::new(1, 1, 0)));
        // A redelivered message is not measured again, and the position never moves back.
        p.record(&batch(&[("a", 2, 0, 20), ("a", 3, 0, 30)]), 200);
        assert_eq!(p.last.get("a"), Some(&MessageId::new(1, 3, 0)));
    }
}
