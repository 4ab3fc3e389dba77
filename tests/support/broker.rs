//! A Pulsar broker for tests: topics and stats over the admin REST API, clients and producers, publishing.

use std::time::{Duration, Instant};

use pulsar::compression::{Compression, CompressionZlib};
use pulsar::routing_policy::RoutingPolicy;
use pulsar::{Producer, ProducerOptions, Pulsar, TokioExecutor, producer};

use lookout_ingester::message::MessageId;
use lookout_ingester::source::admin::parse_position;

use super::http::{eventually, http};
use super::stream::Keyed;

/// A Pulsar broker: its service URL and admin URL.
#[derive(Clone, Debug)]
pub struct Broker {
    pub url: String,
    pub admin: String,
}

/// The shared broker of the test environment.
pub fn shared_broker() -> Broker {
    Broker {
        url: std::env::var("PULSAR_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6650".into()),
        admin: std::env::var("PULSAR_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
    }
}

impl Broker {
    /// A fresh partitioned topic; returns its full name.
    pub async fn create_partitioned_topic(&self, name: &str, partitions: u32) -> String {
        let url = format!("{}/admin/v2/persistent/public/default/{name}/partitions", self.admin);
        let (status, body) = http("PUT", &url, Some(&partitions.to_string())).await;
        assert!(status == 204 || status == 200, "creating topic {name}: HTTP {status} {body}");
        format!("persistent://public/default/{name}")
    }

    /// A fresh non-partitioned topic; returns its full name.
    pub async fn create_topic(&self, name: &str) -> String {
        let url = format!("{}/admin/v2/persistent/public/default/{name}", self.admin);
        let (status, body) = http("PUT", &url, None).await;
        assert!(status == 204 || status == 200, "creating topic {name}: HTTP {status} {body}");
        format!("persistent://public/default/{name}")
    }

    /// The subscription backlog of a non-partitioned topic (None when the broker does not answer).
    pub async fn topic_backlog(&self, topic: &str, subscription: &str) -> Option<u64> {
        let short = topic.trim_start_matches("persistent://");
        let stats = self.get_json(&format!("persistent/{short}/stats")).await?;
        Some(stats["subscriptions"][subscription]["msgBacklog"].as_u64().unwrap_or(0))
    }

    /// `GET {admin}/admin/v2/{path}` as JSON (None when the broker does not answer 200).
    pub async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = http("GET", &format!("{}/admin/v2/{path}", self.admin), None).await;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// The stats of one partition (`persistent://…` full topic name of the partitioned topic).
    pub async fn partition_stats(&self, topic: &str, partition: u32) -> Option<serde_json::Value> {
        let short = topic.trim_start_matches("persistent://");
        self.get_json(&format!("persistent/{short}-partition-{partition}/stats")).await
    }

    /// The subscription backlog of one partition (0 when the subscription does not exist yet; None when the broker
    /// does not answer).
    pub async fn backlog(&self, topic: &str, partition: u32, subscription: &str) -> Option<u64> {
        let stats = self.partition_stats(topic, partition).await?;
        Some(stats["subscriptions"][subscription]["msgBacklog"].as_u64().unwrap_or(0))
    }

    /// The subscription backlog of each partition (None when the broker does not answer).
    pub async fn backlogs(&self, topic: &str, partitions: u32, subscription: &str) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        for p in 0..partitions {
            out.push(self.backlog(topic, p, subscription).await?);
        }
        Some(out)
    }

    /// Consumers connected to a subscription of a non-partitioned topic (0 when the broker does not answer).
    pub async fn topic_consumers(&self, topic: &str, subscription: &str) -> usize {
        let short = topic.trim_start_matches("persistent://");
        let stats = self.get_json(&format!("persistent/{short}/stats")).await.unwrap_or_default();
        stats["subscriptions"][subscription]["consumers"].as_array().map_or(0, Vec::len)
    }

    /// Whether the broker has dispatched every entry of a non-partitioned topic to the subscription's consumer: the
    /// cursor's read position (internal stats) is past the last entry written. Acknowledged or not.
    pub async fn all_dispatched(&self, topic: &str, subscription: &str) -> bool {
        let short = topic.trim_start_matches("persistent://");
        let Some(stats) = self.get_json(&format!("persistent/{short}/internalStats")).await else { return false };
        let position = |v: &serde_json::Value| v.as_str().and_then(parse_position);
        match (position(&stats["lastConfirmedEntry"]), position(&stats["cursors"][subscription]["readPosition"])) {
            (Some(last), Some(read)) => read > last,
            _ => false,
        }
    }

    /// Unloads a topic: the broker closes its consumers, which reconnect and get everything unacknowledged again.
    pub async fn unload(&self, topic: &str) {
        let short = topic.trim_start_matches("persistent://");
        let (status, body) = http("PUT", &format!("{}/admin/v2/persistent/{short}/unload", self.admin), None).await;
        assert!(status == 204 || status == 200, "unloading {short}: HTTP {status} {body}");
    }

    /// Waits until the subscription has no backlog on any partition.
    pub async fn wait_backlog_zero(&self, topic: &str, partitions: u32, subscription: &str, timeout: Duration) {
        eventually("backlog 0 on every partition", timeout, || async {
            self.backlogs(topic, partitions, subscription).await.filter(|b| b.iter().all(|n| *n == 0)).map(|_| ())
        })
        .await;
    }

    /// The active consumer of the subscription on each partition, and how many consumers it has there.
    pub async fn active_consumers(
        &self,
        topic: &str,
        partitions: u32,
        subscription: &str,
    ) -> Vec<(Option<String>, usize)> {
        let mut out = Vec::new();
        for p in 0..partitions {
            let stats = self.partition_stats(topic, p).await.unwrap_or_default();
            let sub = &stats["subscriptions"][subscription];
            out.push((
                sub["activeConsumerName"].as_str().map(str::to_string),
                sub["consumers"].as_array().map_or(0, Vec::len),
            ));
        }
        out
    }

    /// The subscription cursor's mark-delete position `(ledger, entry)` on one partition: everything at or before
    /// it is acknowledged.
    pub async fn mark_delete(&self, topic: &str, partition: u32, subscription: &str) -> Option<(i64, i64)> {
        let short = topic.trim_start_matches("persistent://");
        let stats = self.get_json(&format!("persistent/{short}-partition-{partition}/internalStats")).await?;
        stats["cursors"][subscription]["markDeletePosition"].as_str().and_then(parse_position)
    }

    pub async fn client(&self) -> Pulsar<TokioExecutor> {
        Pulsar::builder(self.url.clone(), TokioExecutor)
            .build()
            .await
            .unwrap_or_else(|e| panic!("Pulsar at {} is not reachable ({e}); run scripts/services.sh up", self.url))
    }

    /// A producer on `topic` (see [`producer_options`]), on a fresh client. Right after a (re)start the broker
    /// may still refuse producers: retried for up to a minute.
    pub async fn producer(&self, topic: &str, batched: bool) -> Producer<TokioExecutor> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let made = async {
                let client =
                    Pulsar::builder(self.url.clone(), TokioExecutor).build().await.map_err(|e| e.to_string())?;
                build_producer(&client, topic, producer_options(batched.then_some(100), batched.then(zlib))).await
            };
            match tokio::time::timeout(Duration::from_secs(30), made).await {
                Ok(Ok(p)) => return p,
                Ok(Err(e)) if Instant::now() < deadline => eprintln!("producer not ready yet: {e}"),
                Err(_) if Instant::now() < deadline => eprintln!("producer not ready yet: timed out"),
                other => panic!("producer on {topic}: {:?}", other.map(|r| r.err())),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Zlib at its fast level, as Armada's producers compress.
pub fn zlib() -> Compression {
    Compression::Zlib(CompressionZlib { level: flate2::Compression::fast() })
}

/// The options of every test producer: batches of up to `batch` messages (one message per entry when `None`),
/// `compression`, and key routing (on a partitioned topic the `RoundRobin` policy hashes the key when there is
/// one, as Armada's producers do with the job set; without a policy pulsar-rs ignores keys).
pub fn producer_options(batch: Option<u32>, compression: Option<Compression>) -> ProducerOptions {
    ProducerOptions {
        batch_size: batch,
        compression,
        block_queue_if_full: true,
        routing_policy: Some(RoutingPolicy::RoundRobin),
        ..Default::default()
    }
}

/// A producer on `topic` (a whole topic or one partition, `<topic>-partition-<n>`) with these options.
pub async fn build_producer(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    options: ProducerOptions,
) -> Result<Producer<TokioExecutor>, String> {
    client.producer().with_topic(topic).with_options(options).build().await.map_err(|e| e.to_string())
}

/// Publishes the messages in order (keyed; with a batching producer they go out in producer batches) and waits
/// for every receipt; returns each message's id.
pub async fn publish(p: &mut Producer<TokioExecutor>, messages: &[Keyed]) -> Vec<MessageId> {
    let mut ids = Vec::with_capacity(messages.len());
    // In windows: the client refuses too many messages awaiting their receipt.
    for window in messages.chunks(500) {
        let mut receipts = Vec::with_capacity(window.len());
        for (key, payload) in window {
            let msg =
                producer::Message { payload: payload.clone(), partition_key: Some(key.clone()), ..Default::default() };
            receipts.push(p.send_non_blocking(msg).await.expect("queue message"));
        }
        if let Err(e) = p.send_batch().await {
            assert!(e.to_string().contains("not a batching producer"), "flush batch: {e}");
        }
        for r in receipts {
            ids.push(receipt_id(r.await.expect("receipt")));
        }
    }
    ids
}

/// The message id a send receipt reports (batch index 0 when not batched).
pub fn receipt_id(r: pulsar::proto::CommandSendReceipt) -> MessageId {
    let id = r.message_id.expect("receipt carries a message id");
    MessageId::new(id.ledger_id as i64, id.entry_id as i64, id.batch_index.unwrap_or(0).max(0))
}
