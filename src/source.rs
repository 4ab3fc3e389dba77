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
//! * **Faults.** When the stream yields an error or ends (broker restart, unload, failed reconnect) the client and
//!   consumer are rebuilt with jittered exponential backoff capped at `max_backoff`; acks are re-sent on the new
//!   consumer. An idle watchdog (`pulsar.idle_rebuild_after`, 5 minutes by default) rebuilds the consumer when one
//!   of its partitions has delivered nothing for that long while the broker reports a backlog, nothing of ours is
//!   waiting to be committed, and the admin API says this consumer is the partition's *active* consumer (on a
//!   Failover subscription shared by several replicas, a partition another replica consumes is silent here too).
//!   It also rebuilds when a partition's consumer dropped by the multi-topic consumer is not re-created in time.
//! * **Shutdown.** On cancel it stops reading (dropping its output, so the batcher flushes), keeps acknowledging
//!   what the writer still commits until the writer hangs up, then closes the consumer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use pulsar::consumer::InitialPosition as PulsarInitialPosition;
use pulsar::message::proto::MessageIdData;
use pulsar::message::proto::command_subscribe::SubType;
use pulsar::{
    Authentication, ConnectionRetryOptions, Consumer, ConsumerOptions, OperationRetryOptions, Pulsar, TokioExecutor,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, InitialPosition};
use crate::message::{Position, RawMessage, Ts};
use crate::metrics as m;

/// `(ledger, entry)` of a Pulsar entry.
pub type EntryId = (i64, i64);
/// `(ledger, entry, batch index)` of a message.
pub type Key = (i64, i64, i32);
/// The highest committed position per partition topic, as the writer reports it after each commit.
pub type Committed = HashMap<String, Key>;

type PulsarConsumer = Consumer<Vec<u8>, TokioExecutor>;

/// First delay before rebuilding a consumer; doubles up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A consumer that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Building a client and consumer takes at most this long before it counts as failed.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// How often pending acks are retried and the watchdog looks.
const TICK: Duration = Duration::from_secs(1);
/// The multi-topic consumer re-creates a partition consumer it lost after at most this long.
const TOPIC_REFRESH: Duration = Duration::from_secs(10);
/// While no message arrives, whether the consumer engines still answer is checked this often (for `/readyz`).
const CONNECTION_CHECK: Duration = Duration::from_secs(5);

/// Whether the consumer is currently subscribed (for `/readyz`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Status(Arc<AtomicBool>);

impl Status {
    pub fn is_subscribed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set_subscribed(&self, subscribed: bool) {
        self.0.store(subscribed, Ordering::Relaxed);
        m::consumer_subscribed(subscribed);
    }
}

/// Where the JWT comes from; a file is read again at every (re)connect, so a rotated token is picked up.
#[derive(Clone, Debug)]
enum Token {
    File(PathBuf),
    Value(String),
}

/// Everything the source needs from the configuration, checked once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    /// Full topic name (`persistent://tenant/namespace/topic`).
    pub topic: String,
    pub subscription: String,
    pub consumer_name: String,
    pub initial_position: InitialPosition,
    pub receiver_queue_size: u32,
    trust_certs: Option<PathBuf>,
    allow_insecure: bool,
    validate_hostname: bool,
    token: Option<Token>,
    pub max_backoff: Duration,
    pub idle_rebuild_after: Duration,
    /// Pulsar's admin REST API (`http://host:port`), asked by the idle watchdog which consumer is active on a
    /// partition: `pulsar.rest_url` (Armada's `pulsar.restURL`), else the service URL's host on port 8080.
    pub admin_url: Option<String>,
}

impl Settings {
    /// Reads the Pulsar part of the configuration. Fails (a configuration error) when a trust-certificate or token
    /// file cannot be read.
    pub fn from_config(config: &Config) -> anyhow::Result<Settings> {
        let p = &config.pulsar;
        let tls = p.url.starts_with("pulsar+ssl://");
        if p.tls_enabled && !tls {
            tracing::warn!(url = %p.url, "pulsar.tls_enabled is set but pulsar.url is not pulsar+ssl://; connecting without TLS");
        }
        if tls && (p.tls_allow_insecure_connection || !p.tls_validate_hostname) {
            tracing::warn!(
                "pulsar.tls_allow_insecure_connection / tls_validate_hostname=false are not honoured by this build's \
                 TLS stack (rustls): the broker certificate and hostname are always verified; give the CA in \
                 pulsar.tls_trust_certs_file_path"
            );
        }
        let trust_certs = match &p.tls_trust_certs_file_path {
            Some(path) if tls => {
                std::fs::metadata(path).with_context(|| {
                    format!("invalid configuration: cannot read pulsar.tls_trust_certs_file_path {}", path.display())
                })?;
                Some(path.clone())
            }
            _ => None,
        };
        let token = if p.authentication_enabled {
            match (&p.jwt_token_path, &p.jwt_token) {
                (Some(path), _) => {
                    read_token(path).with_context(|| "invalid configuration: pulsar.jwt_token_path".to_string())?;
                    Some(Token::File(path.clone()))
                }
                (None, Some(token)) if !token.trim().is_empty() => Some(Token::Value(token.trim().to_string())),
                _ => anyhow::bail!("invalid configuration: pulsar authentication needs jwt_token_path or jwt_token"),
            }
        } else {
            None
        };
        Ok(Settings {
            url: p.url.clone(),
            topic: full_topic_name(&p.jobset_events_topic),
            subscription: config.subscription_name.clone(),
            consumer_name: config.consumer_name(),
            initial_position: config.initial_position,
            receiver_queue_size: p.receiver_queue_size.max(1),
            trust_certs,
            allow_insecure: p.tls_allow_insecure_connection,
            validate_hostname: p.tls_validate_hostname,
            token,
            max_backoff: Duration::from_secs(config.max_backoff.max(1)),
            idle_rebuild_after: p.idle_rebuild_after,
            admin_url: admin_url(p.rest_url.as_ref().and_then(|v| v.as_str()), &p.url),
        })
    }

    fn token(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match &self.token {
            None => Ok(None),
            Some(Token::Value(t)) => Ok(Some(t.clone().into_bytes())),
            Some(Token::File(path)) => Ok(Some(read_token(path)?.into_bytes())),
        }
    }
}

/// The admin REST API's base URL: the configured one (trailing `/` removed), else derived from the service URL
/// (`pulsar://h:6650` → `http://h:8080`, `pulsar+ssl://h:6651` → `https://h:8443`, Pulsar's default ports).
fn admin_url(configured: Option<&str>, service_url: &str) -> Option<String> {
    if let Some(url) = configured.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.trim_end_matches('/').to_string());
    }
    let (scheme, port, rest) = if let Some(rest) = service_url.strip_prefix("pulsar+ssl://") {
        ("https", 8443, rest)
    } else {
        ("http", 8080, service_url.strip_prefix("pulsar://")?)
    };
    // The first host of `host:port[,host:port]/…`.
    let authority = rest.split(['/', ',']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| format!("{scheme}://{host}:{port}"))
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("{} is empty", path.display());
    }
    Ok(token.to_string())
}

/// `events` → `persistent://public/default/events`; `tenant/ns/t` → `persistent://tenant/ns/t`; full names stay.
/// Positions are stored under the full partition name, so `events` and its full form share one committed position.
pub fn full_topic_name(topic: &str) -> String {
    let topic = topic.trim();
    if topic.contains("://") {
        return topic.to_string();
    }
    match topic.matches('/').count() {
        0 => format!("persistent://public/default/{topic}"),
        2 => format!("persistent://{topic}"),
        _ => topic.to_string(),
    }
}

/// Per-partition acknowledgement state.
#[derive(Debug, Default)]
struct PartitionAcks {
    /// The highest position forwarded downstream; redeliveries at or before it are dropped.
    highest_forwarded: Option<Key>,
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
    partitions: HashMap<Arc<str>, PartitionAcks>,
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
        let key = position.key();
        let p = self.partitions.entry(position.source.clone()).or_default();
        if p.highest_forwarded.is_some_and(|h| key <= h) {
            return false;
        }
        p.highest_forwarded = Some(key);
        let entry = (key.0, key.1);
        let size = p.open.entry(entry).or_insert(entry_size);
        *size = (*size).max(entry_size);
        true
    }

    /// Records that everything up to `key` in `topic` is committed.
    pub fn committed(&mut self, topic: &str, key: Key) {
        let Some(p) = self.partitions.get_mut(topic) else { return };
        let entry = (key.0, key.1);
        let done = match p.open.get(&entry) {
            Some(&size) if key.2 >= size - 1 => Some(entry),
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

    /// Nothing forwarded from `topic` is waiting to be committed.
    pub fn settled(&self, topic: &str) -> bool {
        self.partitions.get(topic).is_none_or(|p| p.open.is_empty())
    }
}

/// Turns a Pulsar message into a [`RawMessage`]. Never fails: ids and sizes come from the broker, and odd values
/// are clamped rather than trusted.
fn to_raw(msg: pulsar::consumer::Message<Vec<u8>>, tracker: &mut AckTracker) -> (RawMessage, i32) {
    let pulsar::consumer::Message { topic, payload, message_id, .. } = msg;
    let id = &message_id.id;
    // Ledger and entry ids are Java longs sent as uint64: reinterpreting keeps their order and round-trips.
    let (ledger_id, entry_id) = (id.ledger_id as i64, id.entry_id as i64);
    let (batch_index, entry_size) = match message_id.batch_size {
        Some(size) => {
            let index = id.batch_index.unwrap_or(0).max(0);
            (index, size.max(index.saturating_add(1)).max(1))
        }
        None => (0, 1),
    };
    let publish_time: Ts =
        i64::try_from(payload.metadata.publish_time).ok().and_then(|ms| ms.checked_mul(1000)).unwrap_or(0);
    let position = Position { source: tracker.source(&topic), ledger_id, entry_id, batch_index };
    let raw = RawMessage { position, entry_size, publish_time, payload: Bytes::from(payload.data) };
    (raw, entry_size)
}

/// Jittered exponential backoff.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff { next: INITIAL_BACKOFF, max: max.max(INITIAL_BACKOFF) }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(rand::random_range(0.5..=1.0));
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

/// Builds a client and a Failover consumer on the configured topic.
async fn connect(settings: Arc<Settings>) -> anyhow::Result<PulsarConsumer> {
    let mut builder = Pulsar::builder(settings.url.clone(), TokioExecutor)
        .with_connection_retry_options(ConnectionRetryOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retries: 5,
            connection_timeout: Duration::from_secs(10),
            ..Default::default()
        })
        .with_operation_retry_options(OperationRetryOptions {
            operation_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(2),
            max_retries: Some(15),
        });
    if settings.url.starts_with("pulsar+ssl://") {
        if let Some(path) = &settings.trust_certs {
            builder =
                builder.with_certificate_chain_file(path).with_context(|| format!("cannot read {}", path.display()))?;
        }
        builder = builder
            .with_allow_insecure_connection(settings.allow_insecure)
            .with_tls_hostname_verification_enabled(settings.validate_hostname);
    }
    if let Some(token) = settings.token()? {
        builder = builder.with_auth(Authentication { name: "token".into(), data: token });
    }
    let client = builder.build().await.context("cannot connect to Pulsar")?;
    let position = match settings.initial_position {
        InitialPosition::Earliest => PulsarInitialPosition::Earliest,
        InitialPosition::Latest => PulsarInitialPosition::Latest,
    };
    let consumer: PulsarConsumer = client
        .consumer()
        .with_topic(settings.topic.clone())
        .with_subscription(settings.subscription.clone())
        .with_subscription_type(SubType::Failover)
        .with_consumer_name(settings.consumer_name.clone())
        .with_batch_size(settings.receiver_queue_size)
        .with_topic_refresh(TOPIC_REFRESH)
        .with_options(
            ConsumerOptions::default()
                .with_initial_position(position)
                .with_receiver_queue_size(settings.receiver_queue_size),
        )
        .build()
        .await
        .with_context(|| format!("cannot subscribe to {}", settings.topic))?;
    Ok(consumer)
}

type Connecting = Pin<Box<dyn Future<Output = anyhow::Result<PulsarConsumer>> + Send>>;

fn start_connect(settings: &Arc<Settings>) -> Connecting {
    let settings = settings.clone();
    Box::pin(async move {
        match tokio::time::timeout(BUILD_TIMEOUT, connect(settings)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("subscribing took longer than {BUILD_TIMEOUT:?}")),
        }
    })
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
    status: Status,
}

/// The consumer and what goes with it while it is up.
struct Live {
    consumer: PulsarConsumer,
    since: Instant,
    last_message: Instant,
    last_check: Instant,
    /// When each partition last delivered a message (fresh or redelivered), for the idle watchdog.
    delivered: HashMap<Arc<str>, Instant>,
    /// When the idle watchdog last looked.
    last_watch: Instant,
    /// Partition consumers at subscription (the multi-topic consumer drops one that fails, and re-creates it later).
    partitions: usize,
    /// Since when fewer partition consumers than `partitions` are alive (for the watchdog).
    short_since: Option<Instant>,
    /// The ack last warned about per partition, so a failing ack is logged once, not every tick.
    warned: HashMap<Arc<str>, EntryId>,
}

impl Source {
    pub fn new(settings: Settings, status: Status) -> Self {
        Source { settings: Arc::new(settings), status }
    }

    /// Runs until shutdown: forwards messages on `out` (bounded; the consumer is not read while it is full) and
    /// acknowledges the positions received on `commits`. Returns when `cancel` has fired and the writer has hung
    /// up `commits`, or with an error when a downstream stage is gone while still consuming.
    pub async fn run(
        self,
        out: mpsc::Sender<RawMessage>,
        mut commits: mpsc::Receiver<Committed>,
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
                    Some(committed) => {
                        for (topic, key) in committed {
                            tracker.committed(&topic, key);
                        }
                        if let Some(l) = live.as_mut() {
                            flush_acks(l, &mut tracker).await;
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
                                delivered: HashMap::new(),
                                last_watch: now,
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
                    match next {
                        Some(Ok(msg)) => {
                            if let Some(l) = live.as_mut() {
                                l.last_message = Instant::now();
                            }
                            if !self.status.is_subscribed() {
                                tracing::info!("consumer delivering again");
                                self.status.set_subscribed(true);
                            }
                            let (raw, entry_size) = to_raw(msg, &mut tracker);
                            if let Some(l) = live.as_mut() {
                                l.delivered.insert(raw.position.source.clone(), Instant::now());
                            }
                            if tracker.admit(&raw.position, entry_size) {
                                if redelivered > 0 {
                                    tracing::info!(dropped = redelivered, resumed_at = %raw.position, "redelivery caught up");
                                    redelivered = 0;
                                }
                                pending = Some(raw);
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
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "consumer stream failed; rebuilding the consumer");
                            retry = Some(self.tear_down(&mut live, &mut backoff, "stream_error"));
                        }
                        None => {
                            tracing::warn!("consumer stream ended; rebuilding the consumer");
                            retry = Some(self.tear_down(&mut live, &mut backoff, "stream_ended"));
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
                    if consuming && self.partition_consumer_lost(&mut live) {
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

    /// While idle (and not held back by a full pipeline, so the engines are not blocked handing us messages), asks
    /// every consumer engine for its connection. An engine busy reconnecting does not answer, and a partition
    /// consumer the multi-topic consumer dropped is missing: the consumer then counts as not subscribed for
    /// `/readyz` until all answer or it delivers again. Never rebuilds by itself.
    async fn check_connection(&self, live: &mut Option<Live>) {
        let Some(l) = live.as_mut() else { return };
        if l.last_message.elapsed() < CONNECTION_CHECK || l.last_check.elapsed() < CONNECTION_CHECK {
            return;
        }
        l.last_check = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(3), l.consumer.connections()).await;
        let connected =
            matches!(answered, Ok(Ok(urls)) if !urls.is_empty()) && l.consumer.topics().len() >= l.partitions;
        if connected != self.status.is_subscribed() {
            if connected {
                tracing::info!("consumer connected again");
            } else {
                tracing::warn!("consumer not connected (reconnecting to the broker)");
            }
            self.status.set_subscribed(connected);
        }
    }

    /// Part of the watchdog (on when `idle_rebuild_after` is not 0): the multi-topic consumer drops a partition's
    /// consumer whose stream ends (a broker restart) and re-creates it at its next topic refresh, but its re-creation
    /// can fail for good (seen after a broker kill -9: both partitions gone, never back, nothing delivered, and
    /// nothing else notices because the merged stream does not end). Checked every tick; the consumer is rebuilt when
    /// a partition consumer has been missing for [`lost_grace`] of `idle_rebuild_after`.
    fn partition_consumer_lost(&self, live: &mut Option<Live>) -> bool {
        let idle = self.settings.idle_rebuild_after;
        let Some(l) = live.as_mut() else { return false };
        let alive = l.consumer.consumer_id().len();
        if alive >= l.partitions {
            l.short_since = None;
            return false;
        }
        let since = *l.short_since.get_or_insert_with(Instant::now);
        if !lost_too_long(alive, l.partitions, since.elapsed(), idle) {
            return false;
        }
        tracing::warn!(
            alive, partitions = l.partitions, missing_for = ?since.elapsed(),
            "partition consumers lost and not re-created; rebuilding the consumer"
        );
        true
    }

    /// The idle watchdog (pulsar-rs #189 and relatives: a consumer, or one partition of it, can stop delivering
    /// after broker restarts). At most once per `idle_rebuild_after`, it looks at the partitions that delivered
    /// nothing for that long and have nothing of ours awaiting commit. If the broker reports a backlog on one of
    /// them, it asks the admin API which consumer is the partition's active one, and rebuilds only when it is this
    /// consumer ([`warrants_rebuild`]): on a Failover subscription shared by several replicas, a partition another
    /// replica consumes is silent here with a backlog too, and rebuilding for it would only disturb the consumer.
    /// It also rebuilds when the broker lists no consumer on the partition (ours is gone there). When the answer
    /// cannot be had (no admin API), it says so and does not rebuild. A consumer whose own stats request fails or
    /// times out is rebuilt.
    async fn idle_and_stuck(&self, live: &mut Option<Live>, tracker: &AckTracker) -> bool {
        let idle = self.settings.idle_rebuild_after;
        let Some(l) = live.as_mut() else { return false };
        if idle.is_zero() || l.last_watch.elapsed() < idle || l.since.elapsed() < idle {
            return false;
        }
        l.last_watch = Instant::now();
        // The multi-topic consumer answers in the order of its partitions' names.
        let mut topics = l.consumer.topics();
        topics.sort();
        let quiet = |topic: &str| l.delivered.get(topic).is_none_or(|t| t.elapsed() >= idle) && tracker.settled(topic);
        if !topics.iter().any(|t| quiet(t)) {
            return false;
        }
        let stats = match tokio::time::timeout(Duration::from_secs(10), l.consumer.get_stats()).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer stats failed after an idle period");
                return true;
            }
            Err(_) => {
                tracing::warn!("consumer stats timed out after an idle period");
                return true;
            }
        };
        if stats.len() != topics.len() {
            return false;
        }
        for (topic, stat) in topics.iter().zip(&stats) {
            let (quiet, backlog) = (quiet(topic), stat.msg_backlog.unwrap_or(0));
            if !(quiet && backlog > 0) {
                continue;
            }
            let active = self.active_consumer(topic).await;
            if warrants_rebuild(quiet, backlog, &active) {
                tracing::warn!(
                    topic = %topic, backlog, idle = ?idle,
                    "partition delivers nothing to its active consumer (us) while the broker reports a backlog"
                );
                return true;
            }
            match active {
                Active::Other(name) => tracing::debug!(
                    topic = %topic, backlog, active = %name, "silent partition is consumed by another consumer"
                ),
                Active::Unknown(why) => tracing::warn!(
                    topic = %topic, backlog, idle = ?idle, reason = %why,
                    "partition delivers nothing while the broker reports a backlog, but whether this consumer is its \
                     active consumer is unknown; not rebuilding"
                ),
                Active::Us | Active::Nobody => {}
            }
        }
        false
    }

    /// Which consumer the broker dispatches `topic` to on our subscription, from the admin API's topic stats.
    async fn active_consumer(&self, topic: &str) -> Active {
        let Some(base) = &self.settings.admin_url else {
            return Active::Unknown("no admin URL (pulsar.rest_url)".into());
        };
        // `persistent://tenant/ns/t-partition-0` → `{base}/admin/v2/persistent/tenant/ns/t-partition-0/stats`.
        let url = format!("{base}/admin/v2/{}/stats", topic.replacen("://", "/", 1));
        let token = match self.settings.token() {
            Ok(token) => token,
            Err(e) => return Active::Unknown(format!("token: {e:#}")),
        };
        match tokio::time::timeout(ADMIN_TIMEOUT, admin_get(&url, token.as_deref())).await {
            Ok(Ok(stats)) => active_from_stats(&stats, &self.settings.subscription, &self.settings.consumer_name),
            Ok(Err(e)) => Active::Unknown(format!("GET {url}: {e}")),
            Err(_) => Active::Unknown(format!("GET {url}: no answer within {ADMIN_TIMEOUT:?}")),
        }
    }
}

/// How long a partition consumer may be missing before the consumer is rebuilt: `idle_rebuild_after`, kept between
/// three topic refreshes (the multi-topic consumer's own chance to re-create it) and a minute.
fn lost_grace(idle: Duration) -> Duration {
    idle.clamp(3 * TOPIC_REFRESH, Duration::from_secs(60))
}

/// Whether `alive` of `partitions` partition consumers, short for `missing_for`, warrants a rebuild (never with the
/// watchdog off, `idle` 0).
fn lost_too_long(alive: usize, partitions: usize, missing_for: Duration, idle: Duration) -> bool {
    !idle.is_zero() && alive < partitions && missing_for >= lost_grace(idle)
}

/// Who the broker dispatches a partition to on our subscription (Failover: one active consumer per partition).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Active {
    /// This consumer (same consumer name).
    Us,
    /// No consumer at all, or no such subscription: the broker does not know the consumer we think we have.
    Nobody,
    /// Another consumer, e.g. another replica: silence here is normal.
    Other(String),
    /// Could not be found out, and why.
    Unknown(String),
}

/// The watchdog's decision for one partition: rebuild only when it delivered nothing for the idle period with
/// nothing of ours awaiting commit (`quiet`), the broker holds a backlog for the subscription, and this consumer
/// is the one the broker should be delivering it to.
fn warrants_rebuild(quiet: bool, backlog: u64, active: &Active) -> bool {
    quiet && backlog > 0 && matches!(active, Active::Us | Active::Nobody)
}

/// Reads `subscriptions.<subscription>.activeConsumerName` from a topic's stats (admin API JSON) and compares it
/// with our consumer name. Replicas must therefore have distinct consumer names (the default,
/// `lookout-ingester-<hostname>`, is).
fn active_from_stats(stats: &serde_json::Value, subscription: &str, consumer: &str) -> Active {
    let Some(subscriptions) = stats.get("subscriptions").and_then(|s| s.as_object()) else {
        return Active::Unknown("the answer has no subscriptions".into());
    };
    let Some(sub) = subscriptions.get(subscription) else { return Active::Nobody };
    let consumers = sub.get("consumers").and_then(|c| c.as_array()).map(Vec::len);
    match sub.get("activeConsumerName").and_then(|n| n.as_str()) {
        Some(name) if name == consumer => Active::Us,
        Some(name) => Active::Other(name.to_string()),
        None if consumers == Some(0) => Active::Nobody,
        None => Active::Unknown("the subscription stats name no active consumer".into()),
    }
}

/// How long one admin API request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin API answer read.
const ADMIN_MAX_BODY: usize = 8 << 20;

/// `GET url` on the admin API (plain HTTP/1.1, `Connection: close`), the body parsed as JSON. `https://` is not
/// supported (no TLS client here): the watchdog then cannot tell which consumer is active and does not rebuild.
async fn admin_get(url: &str, token: Option<&[u8]>) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("only http:// admin URLs are supported")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let address = if authority.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit())) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("connect: {e}"))?;
    let auth = match token {
        Some(t) => format!("Authorization: Bearer {}\r\n", String::from_utf8_lossy(t)),
        None => String::new(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream.take(ADMIN_MAX_BODY as u64).read_to_end(&mut raw).await.map_err(|e| format!("read: {e}"))?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("HTTP {status}"));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    serde_json::from_slice(&body).map_err(|e| format!("JSON: {e}"))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = s.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunked body")?;
        let size = std::str::from_utf8(&s[..line_end]).map_err(|_| "bad chunk size")?;
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        s = &s[line_end + 2..];
        if n == 0 {
            return Ok(out);
        }
        if s.len() < n {
            return Err("truncated chunked body".into());
        }
        out.extend_from_slice(&s[..n]);
        s = s[n..].strip_prefix(b"\r\n").unwrap_or(&s[n..]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(t: &mut AckTracker, topic: &str, l: i64, e: i64, b: i32) -> Position {
        Position { source: t.source(topic), ledger_id: l, entry_id: e, batch_index: b }
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
    fn topic_names_are_made_full() {
        assert_eq!(full_topic_name("events"), "persistent://public/default/events");
        assert_eq!(full_topic_name("t/ns/events"), "persistent://t/ns/events");
        assert_eq!(full_topic_name("persistent://t/ns/events"), "persistent://t/ns/events");
        assert_eq!(full_topic_name("non-persistent://t/ns/x"), "non-persistent://t/ns/x");
    }

    #[test]
    fn a_partly_committed_entry_is_not_acked() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 5)]);
        t.committed("p0", (1, 10, 2));
        assert!(t.due().is_empty());
        t.committed("p0", (1, 10, 4));
        assert_eq!(t.due(), vec![("p0".into(), (1, 10))]);
        assert_eq!(t.acked("p0", (1, 10)), 5);
        assert!(t.due().is_empty());
        assert!(t.settled("p0"));
    }

    #[test]
    fn a_later_entry_committed_completes_the_earlier_ones() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 3), (11, 1), (12, 4)]);
        t.committed("p0", (1, 12, 1));
        assert_eq!(t.due(), vec![("p0".into(), (1, 11))]);
        assert_eq!(t.acked("p0", (1, 11)), 4);
        assert!(!t.settled("p0"));
        t.committed("p0", (1, 12, 3));
        assert_eq!(t.due(), vec![("p0".into(), (1, 12))]);
        assert_eq!(t.acked("p0", (1, 12)), 4);
    }

    #[test]
    fn an_unbatched_message_is_a_whole_entry() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(7, 1)]);
        t.committed("p0", (1, 7, 0));
        assert_eq!(t.due(), vec![("p0".into(), (1, 7))]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(1, 2)]);
        forward(&mut t, "p1", &[(1, 2)]);
        t.committed("p0", (1, 1, 1));
        t.committed("p1", (1, 1, 0));
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
    fn acks_are_sent_again_after_a_rebuild_without_counting_twice() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 2)]);
        t.committed("p0", (1, 10, 1));
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
        t.committed("p0", (1, 11, 0));
        t.committed("p0", (1, 10, 0));
        assert_eq!(t.due(), vec![("p0".into(), (1, 11))]);
        // Unknown partitions and positions are ignored.
        t.committed("nope", (1, 1, 0));
        assert_eq!(t.due().len(), 1);
    }

    #[test]
    fn the_first_partial_commit_acks_nothing() {
        let mut t = AckTracker::default();
        forward(&mut t, "p0", &[(10, 3)]);
        t.committed("p0", (1, 10, 0));
        assert!(t.due().is_empty());
        assert!(!t.settled("p0"));
    }

    #[test]
    fn the_watchdog_rebuilds_only_for_a_silent_partition_it_is_the_active_consumer_of() {
        let (us, other) = (Active::Us, Active::Other("lookout-ingester-replica-b".into()));
        let unknown = Active::Unknown("admin API unreachable".into());
        // quiet, backlog, active → rebuild?
        let table = [
            (true, 3, &us, true),
            (true, 3, &Active::Nobody, true), // the broker has no consumer there: ours is lost
            (true, 3, &other, false),         // another replica owns it: silence is normal
            (true, 3, &unknown, false),
            (true, 0, &us, false),  // nothing to deliver
            (false, 3, &us, false), // delivered recently, or something of ours awaits commit
            (false, 0, &other, false),
        ];
        for (quiet, backlog, active, want) in table {
            assert_eq!(warrants_rebuild(quiet, backlog, active), want, "quiet {quiet}, backlog {backlog}, {active:?}");
        }
    }

    #[test]
    fn a_partition_consumer_missing_past_the_grace_rebuilds() {
        let (s, m) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(lost_grace(5 * s), 30 * s);
        assert_eq!(lost_grace(5 * m), m);
        assert!(!lost_too_long(1, 2, 29 * s, 5 * s), "within three topic refreshes");
        assert!(lost_too_long(1, 2, 30 * s, 5 * s));
        assert!(lost_too_long(0, 2, m, 5 * m));
        assert!(!lost_too_long(2, 2, 10 * m, 5 * m), "none missing");
        assert!(!lost_too_long(0, 2, 10 * m, Duration::ZERO), "watchdog off");
    }

    #[test]
    fn the_active_consumer_is_read_from_the_topic_stats() {
        // The shape of `GET /admin/v2/persistent/{tenant}/{ns}/{topic}/stats` (Pulsar 4.0), abridged.
        let stats: serde_json::Value = serde_json::from_str(
            r#"{"msgBacklog": 3, "subscriptions": {
                "lookout-ingester-v2": {"msgBacklog": 3, "type": "Failover",
                    "activeConsumerName": "lookout-ingester-a",
                    "consumers": [{"consumerName": "lookout-ingester-a"}, {"consumerName": "lookout-ingester-b"}]},
                "other-sub": {"msgBacklog": 0, "type": "Exclusive", "consumers": []}}}"#,
        )
        .unwrap();
        let sub = "lookout-ingester-v2";
        assert_eq!(active_from_stats(&stats, sub, "lookout-ingester-a"), Active::Us);
        assert_eq!(active_from_stats(&stats, sub, "lookout-ingester-b"), Active::Other("lookout-ingester-a".into()));
        assert_eq!(active_from_stats(&stats, "missing", "lookout-ingester-a"), Active::Nobody);
        assert_eq!(active_from_stats(&stats, "other-sub", "lookout-ingester-a"), Active::Nobody);
        let odd: serde_json::Value = serde_json::from_str(r#"{"subscriptions": {"s": {"consumers": [{}]}}}"#).unwrap();
        assert!(matches!(active_from_stats(&odd, "s", "a"), Active::Unknown(_)));
        assert!(matches!(active_from_stats(&serde_json::json!({"reason": "x"}), "s", "a"), Active::Unknown(_)));
    }

    #[test]
    fn the_admin_url_is_configured_or_derived_from_the_service_url() {
        assert_eq!(admin_url(Some("http://pulsar:8080/"), "pulsar://x:6650").as_deref(), Some("http://pulsar:8080"));
        assert_eq!(admin_url(None, "pulsar://pulsar:6650").as_deref(), Some("http://pulsar:8080"));
        assert_eq!(admin_url(Some(" "), "pulsar://127.0.0.1:6652").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(admin_url(None, "pulsar+ssl://b.example:6651").as_deref(), Some("https://b.example:8443"));
        assert_eq!(admin_url(None, "pulsar://a:6650,b:6650/").as_deref(), Some("http://a:8080"));
        assert_eq!(admin_url(None, "pulsar://broker").as_deref(), Some("http://broker:8080"));
        assert_eq!(admin_url(None, "http://nope"), None);
    }

    #[test]
    fn chunked_admin_answers_are_decoded() {
        assert_eq!(dechunk(b"4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n").unwrap(), b"{\"a\":1}");
        assert!(dechunk(b"9\r\nshort").is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(250) && d[0] <= INITIAL_BACKOFF);
        assert!(d.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(d[5] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= INITIAL_BACKOFF);
    }
}
