//! Connect: builds the Pulsar client and the Failover consumer, with jittered exponential backoff between tries,
//! and turns Pulsar messages into [`RawMessage`]s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use pulsar::consumer::InitialPosition as PulsarInitialPosition;
use pulsar::message::proto::command_subscribe::SubType;
use pulsar::{Authentication, ConnectionRetryOptions, ConsumerOptions, OperationRetryOptions, Pulsar, TokioExecutor};

use super::acks::AckTracker;
use super::settings::Settings;
use super::{PulsarConsumer, TOPIC_REFRESH};
use crate::config::InitialPosition;
use crate::message::{MessageId, Position, RawMessage, Ts};

/// First delay before rebuilding a consumer; doubles up to `max_backoff`.
pub(super) const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Building a client and consumer takes at most this long before it counts as failed.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Turns a Pulsar message into a [`RawMessage`]. Never fails: ids and sizes come from the broker, and odd values
/// are clamped rather than trusted.
pub(super) fn to_raw(msg: pulsar::consumer::Message<Vec<u8>>, tracker: &mut AckTracker) -> (RawMessage, i32) {
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
    let position = Position { source: tracker.source(&topic), id: MessageId::new(ledger_id, entry_id, batch_index) };
    let raw = RawMessage { position, entry_size, publish_time, payload: Bytes::from(payload.data) };
    (raw, entry_size)
}

/// Jittered exponential backoff.
pub(super) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(super) fn new(max: Duration) -> Self {
        Backoff { next: INITIAL_BACKOFF, max: max.max(INITIAL_BACKOFF) }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(rand::random_range(0.5..=1.0));
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(super) fn reset(&mut self) {
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

pub(super) type Connecting = Pin<Box<dyn Future<Output = anyhow::Result<PulsarConsumer>> + Send>>;

pub(super) fn start_connect(settings: &Arc<Settings>) -> Connecting {
    let settings = settings.clone();
    Box::pin(async move {
        match tokio::time::timeout(BUILD_TIMEOUT, connect(settings)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("subscribing took longer than {BUILD_TIMEOUT:?}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
