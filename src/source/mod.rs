//! Source: the Pulsar stage. Owns the client and the consumer, turns messages into [`RawMessage`]s, and
//! acknowledges what the writer has committed.
//!
//! * **Subscription.** Failover on `pulsar.jobset_events_topic` (a partitioned topic becomes one consumer per
//!   partition; [`RawMessage::position`]`.source` is the full partition topic name), initial position from the
//!   configuration, flow permits and client queue of `pulsar.receiver_queue_size` messages.
//! * **Acknowledgements** ([`AckTracker`]). pulsar-rs has no batch-index acks: acking any message of a producer
//!   batch acks the whole entry. So an entry is acknowledged only once it is *complete* — its last message
//!   committed, or a later entry of the same partition committed — with a cumulative ack of the last complete
//!   entry per partition. Acks are sent only for positions the writer reports as committed; nothing is ever
//!   nacked (on Failover a nack rewinds the whole cursor).
//! * **Redeliveries.** After a rebuild the broker redelivers from the last acknowledged entry. Messages at or before
//!   the highest position already forwarded for their partition are dropped here: they are in flight or committed
//!   (and the store would skip them anyway).
//! * **Gaps.** When the writer holds a partition back because its messages do not continue the committed position
//!   (`writer::gaps`: the broker delivered later entries first), the partition's forwarded state is set back to
//!   the committed position and the consumer rebuilt, so the broker delivers it again in order; while the gap
//!   persists this repeats every [`acks::REWIND_EVERY`].
//! * **Faults.** When the stream yields an error or ends (broker restart, unload, failed reconnect) the client and
//!   consumer are rebuilt with jittered exponential backoff capped at `max_backoff`; acks are re-sent on the new
//!   consumer. An idle watchdog (`pulsar.idle_rebuild_after`, 5 minutes by default) rebuilds the consumer when one
//!   of its partitions has delivered nothing for that long while the broker reports a backlog, nothing of ours is
//!   waiting to be committed, and the admin API says this consumer is the partition's *active* consumer (on a
//!   Failover subscription shared by several replicas, a partition another replica consumes is silent here too).
//!   It also rebuilds when a partition's consumer dropped by the multi-topic consumer is not re-created in time.
//! * **Shutdown.** On cancel it stops reading (dropping its output, so the batcher flushes), keeps acknowledging
//!   what the writer still commits until the writer hangs up, then closes the consumer.
//!
//! Files: `settings` (configuration), `acks` (which entries may be acknowledged), `connect` (client, consumer,
//! backoff), `watchdog` (idle and lost-partition checks), `admin` (the admin REST API client); the run loop is here.

mod acks;
pub mod admin;
mod connect;
mod settings;
mod watchdog;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use pulsar::message::proto::MessageIdData;
use pulsar::{Consumer, TokioExecutor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::message::{EntryId, MessageId, RawMessage};
use crate::metrics as m;
use admin::Admin;
use connect::{Backoff, Connecting, start_connect, to_raw};

pub use acks::AckTracker;
pub use settings::{Settings, full_topic_name};

/// The highest committed position per partition topic, as the writer reports it after each commit.
pub type Committed = HashMap<String, MessageId>;

/// What the writer reports to the source after each commit.
#[derive(Debug, Default, Clone)]
pub struct CommitReport {
    /// The highest committed position per partition topic: acknowledge up to there.
    pub committed: Committed,
    /// Partitions the writer held back for a gap in delivery (`writer::gaps`), with their committed positions:
    /// deliver them again from there.
    pub gaps: Committed,
}

type PulsarConsumer = Consumer<Vec<u8>, TokioExecutor>;

/// A consumer that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How often pending acks are retried and the watchdog looks.
const TICK: Duration = Duration::from_secs(1);
/// The multi-topic consumer re-creates a partition consumer it lost after at most this long.
const TOPIC_REFRESH: Duration = Duration::from_secs(10);
/// While no message arrives, whether the consumer engines still answer is checked this often (for `/readyz`).
const CONNECTION_CHECK: Duration = Duration::from_secs(5);
/// Messages taken from the client in one turn of the run loop when it has them ready.
const BURST: usize = 256;

/// Whether the consumer is currently subscribed (for `/readyz`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Subscription(Arc<AtomicBool>);

impl Subscription {
    pub fn is_subscribed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set_subscribed(&self, subscribed: bool) {
        self.0.store(subscribed, Ordering::Relaxed);
        m::consumer_subscribed(subscribed);
    }
}
/// Awaits the future if there is one, else never completes (for optional `select!` branches).
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    consumer: Option<&mut PulsarConsumer>,
) -> Option<Result<pulsar::consumer::Message<Vec<u8>>, pulsar::Error>> {
    match consumer {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

async fn reserve(out: Option<&mpsc::Sender<RawMessage>>) -> Result<mpsc::Permit<'_, RawMessage>, ()> {
    match out {
        Some(tx) => tx.reserve().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// The Pulsar stage.
pub struct Source {
    settings: Arc<Settings>,
    status: Subscription,
    /// The admin API client the watchdog asks, or why there is none.
    admin: Result<Admin, String>,
}

/// The consumer and what goes with it while it is up.
struct Live {
    consumer: PulsarConsumer,
    since: Instant,
    last_message: Instant,
    last_check: Instant,
    /// When each partition last delivered a message (fresh or redelivered), for the idle watchdog.
    delivered: foldhash::HashMap<Arc<str>, Instant>,
    /// When the idle watchdog last looked.
    last_watch: Instant,
    /// Silent partitions with a backlog, and since when the watchdog has seen this consumer as their active one.
    ours_since: HashMap<String, Instant>,
    /// Partition consumers at subscription (the multi-topic consumer drops one that fails, and re-creates it later).
    partitions: usize,
    /// Since when fewer partition consumers than `partitions` are alive (for the watchdog).
    short_since: Option<Instant>,
    /// The ack last warned about per partition, so a failing ack is logged once, not every tick.
    warned: HashMap<Arc<str>, EntryId>,
}

impl Live {
    /// Notes a message of `partition` delivered `at` (the partition's name is cloned only the first time).
    fn delivered_at(&mut self, partition: &Arc<str>, at: Instant) {
        self.last_message = at;
        match self.delivered.get_mut(&**partition) {
            Some(t) => *t = at,
            None => {
                self.delivered.insert(partition.clone(), at);
            }
        }
    }
}

impl Source {
    pub fn new(settings: Settings, status: Subscription) -> Self {
        let admin = match settings.admin_url {
            None => Err("no admin URL (pulsar.rest_url)".to_string()),
            Some(_) => Admin::from_settings(&settings).map_err(|e| format!("admin API client: {e:#}")),
        };
        Source { settings: Arc::new(settings), status, admin }
    }

    /// Runs until shutdown: forwards messages on `out` (bounded; the consumer is not read while it is full) and
    /// acknowledges the positions received on `commits`. Returns when `cancel` has fired and the writer has hung
    /// up `commits`, or with an error when a downstream stage is gone while still consuming.
    pub async fn run(
        self,
        out: mpsc::Sender<RawMessage>,
        mut commits: mpsc::Receiver<CommitReport>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        tracing::info!(
            topic = %settings.topic,
            subscription = %settings.subscription,
            consumer = %settings.consumer_name,
            url = %settings.url,
            "subscribing (Failover)"
        );
        let mut tracker = AckTracker::default();
        let mut out = Some(out);
        let mut live: Option<Live> = None;
        let mut connecting: Option<Connecting> = Some(start_connect(&settings));
        let mut retry: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut pending: Option<RawMessage> = None;
        let mut backoff = Backoff::new(settings.max_backoff);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Redelivered messages dropped since the last fresh one (for one log line per redelivery).
        let mut redelivered = 0u64;
        let mut rewinds = acks::Rewinds::default();

        loop {
            let consuming = out.is_some();
            let mut stopping = false;
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if consuming => {
                    tracing::info!("shutdown: stopped consuming; acknowledging what the writer still commits");
                    stopping = true;
                    pending = None;
                    connecting = None;
                    retry = None;
                }
                commit = commits.recv() => match commit {
                    Some(report) => {
                        for (topic, id) in &report.committed {
                            tracker.committed(topic, *id);
                        }
                        if let Some(l) = live.as_mut() {
                            flush_acks(l, &mut tracker).await;
                        }
                        if consuming && live.is_some() && rewinds.report(&report, &mut tracker) {
                            retry = Some(self.tear_down(&mut live, &mut backoff, "delivery_gap"));
                        }
                    }
                    None => break,
                },
                built = maybe(connecting.as_mut()) => {
                    connecting = None;
                    match built {
                        Ok(consumer) => {
                            let topics = consumer.topics();
                            tracing::info!(topic = %settings.topic, partitions = topics.len(), "subscribed");
                            let now = Instant::now();
                            live = Some(Live {
                                consumer,
                                since: now,
                                last_message: now,
                                last_check: now,
                                delivered: Default::default(),
                                last_watch: now,
                                ours_since: HashMap::new(),
                                partitions: topics.len(),
                                short_since: None,
                                warned: HashMap::new(),
                            });
                            self.status.set_subscribed(true);
                            tracker.reassert();
                            if let Some(l) = live.as_mut() {
                                flush_acks(l, &mut tracker).await;
                            }
                        }
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(error = format!("{e:#}"), retry_in = ?delay, "cannot subscribe; will retry");
                            retry = Some(Box::pin(tokio::time::sleep(delay)));
                        }
                    }
                }
                _ = maybe(retry.as_mut()) => {
                    retry = None;
                    connecting = Some(start_connect(&settings));
                }
                permit = reserve(out.as_ref()), if pending.is_some() => match permit {
                    Ok(permit) => {
                        if let Some(msg) = pending.take() {
                            permit.send(msg);
                        }
                    }
                    Err(()) => anyhow::bail!("source: the batch stage stopped while consuming"),
                },
                next = next_message(live.as_mut().map(|l| &mut l.consumer)), if consuming && pending.is_none() => {
                    // What else the client has ready is taken in the same turn (up to `BURST` messages): this
                    // select, its futures and the clock then cost once per burst instead of once per message.
                    let now = Instant::now();
                    let mut next = next;
                    let mut taken = 0;
                    loop {
                        let msg = match next {
                            Some(Ok(msg)) => msg,
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "consumer stream failed; rebuilding the consumer");
                                retry = Some(self.tear_down(&mut live, &mut backoff, "stream_error"));
                                break;
                            }
                            None => {
                                tracing::warn!("consumer stream ended; rebuilding the consumer");
                                retry = Some(self.tear_down(&mut live, &mut backoff, "stream_ended"));
                                break;
                            }
                        };
                        taken += 1;
                        if !self.status.is_subscribed() {
                            tracing::info!("consumer delivering again");
                            self.status.set_subscribed(true);
                        }
                        let (raw, entry_size) = to_raw(msg, &mut tracker);
                        if let Some(l) = live.as_mut() {
                            l.delivered_at(&raw.position.source, now);
                        }
                        if tracker.admit(&raw.position, entry_size) {
                            if redelivered > 0 {
                                tracing::info!(dropped = redelivered, resumed_at = %raw.position, "redelivery caught up");
                                redelivered = 0;
                            }
                            match out.as_ref().map(|tx| tx.try_send(raw)) {
                                Some(Ok(())) => {}
                                Some(Err(mpsc::error::TrySendError::Full(raw))) => {
                                    pending = Some(raw);
                                    break;
                                }
                                Some(Err(mpsc::error::TrySendError::Closed(_))) | None => {
                                    anyhow::bail!("source: the batch stage stopped while consuming")
                                }
                            }
                        } else {
                            if redelivered == 0 {
                                tracing::info!(
                                    position = %raw.position,
                                    "redelivery: dropping messages already forwarded (in flight or committed)"
                                );
                            }
                            redelivered += 1;
                            m::redeliveries_dropped(1);
                        }
                        let Some(l) = live.as_mut().filter(|_| taken < BURST) else { break };
                        match l.consumer.next().now_or_never() {
                            Some(more) => next = more,
                            None => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Some(l) = live.as_mut() {
                        flush_acks(l, &mut tracker).await;
                    }
                    if consuming && pending.is_none() {
                        self.check_connection(&mut live).await;
                    }
                    if consuming && live.is_some() && rewinds.due(&mut tracker) {
                        retry = Some(self.tear_down(&mut live, &mut backoff, "delivery_gap"));
                    } else if consuming && self.partition_consumer_lost(&mut live) {
                        retry = Some(self.tear_down(&mut live, &mut backoff, "partition_consumer_lost"));
                    } else if consuming && pending.is_none() && self.idle_and_stuck(&mut live, &tracker).await {
                        retry = Some(self.tear_down(&mut live, &mut backoff, "idle_watchdog"));
                    }
                }
            }
            if stopping {
                // Dropping the sender ends the batcher's input: it flushes its open batch.
                out = None;
            }
        }

        if let Some(mut l) = live.take() {
            flush_acks(&mut l, &mut tracker).await;
            // `close` goes through the consumer engine after the acks queued above, so they are sent first.
            match tokio::time::timeout(Duration::from_secs(5), l.consumer.close()).await {
                Ok(Ok(())) => tracing::info!("consumer closed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "closing the consumer failed"),
                Err(_) => tracing::warn!("closing the consumer timed out"),
            }
        }
        self.status.set_subscribed(false);
        Ok(())
    }

    /// Drops the consumer and returns the delay before the next attempt.
    fn tear_down(
        &self,
        live: &mut Option<Live>,
        backoff: &mut Backoff,
        reason: &'static str,
    ) -> Pin<Box<tokio::time::Sleep>> {
        if let Some(l) = live.take()
            && l.since.elapsed() >= HEALTHY_AFTER
        {
            backoff.reset();
        }
        self.status.set_subscribed(false);
        m::consumer_rebuilt(reason);
        let delay = backoff.next_delay();
        tracing::info!(reason, rebuild_in = ?delay, "consumer dropped");
        Box::pin(tokio::time::sleep(delay))
    }
}

/// Hands the due cumulative acks to the client. Acks are fire-and-forget in pulsar-rs: `Ok` means queued. A
/// failed one (e.g. a partition consumer being re-created) stays due and is retried at the next tick.
async fn flush_acks(live: &mut Live, tracker: &mut AckTracker) {
    for (topic, entry) in tracker.due() {
        let id = MessageIdData { ledger_id: entry.0 as u64, entry_id: entry.1 as u64, ..Default::default() };
        match live.consumer.cumulative_ack_with_id(&topic, id).await {
            Ok(()) => {
                let messages = tracker.acked(&topic, entry);
                m::acked(messages);
                live.warned.remove(&topic);
                tracing::debug!(topic = %topic, ledger = entry.0, entry = entry.1, messages, "acknowledged (cumulative)");
            }
            Err(e) => {
                if live.warned.get(&topic) != Some(&entry) {
                    tracing::warn!(topic = %topic, ledger = entry.0, entry = entry.1, error = %e, "ack not sent; will retry");
                    live.warned.insert(topic.clone(), entry);
                }
            }
        }
    }
}
