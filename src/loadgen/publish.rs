//! Publishing a stream to Pulsar as Armada's producers do: keyed by job set, zlib, producer batching (at most 1 000
//! messages, 128 KiB or 10 ms per batch, the Go client's defaults), one producer per partition and each key always
//! routed to the same partition (Java's `String.hashCode`, Pulsar's default hashing). Paced to a target rate in
//! events/s, or as fast as the broker takes them. Records where each message landed and when it was sent, for the
//! benchmark's lag figures.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulsar::compression::{Compression, CompressionZlib};
use pulsar::{Producer, ProducerOptions, Pulsar, TokioExecutor, producer};

use super::Message;
use super::topic::Topic;

/// Where one message landed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub partition: u32,
    pub ledger: i64,
    pub entry: i64,
    /// When it was handed to the producer, since the start of publishing.
    pub at: Duration,
}

/// What a publication did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub messages: usize,
    pub events: usize,
    pub bytes: usize,
    pub elapsed: Duration,
    /// Per message, in stream order.
    pub sent: Vec<Sent>,
}

impl Report {
    pub fn summary(&self, topic: &str) -> String {
        let s = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "published {} messages ({} events, {:.1} MiB before compression) to {topic} in {:.2} s: {:.0} events/s, {:.0} messages/s",
            self.messages,
            self.events,
            self.bytes as f64 / 1048576.0,
            s,
            self.events as f64 / s,
            self.messages as f64 / s
        )
    }
}

/// How to publish.
#[derive(Clone, Debug)]
pub struct Options {
    /// Target events per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Print a progress line on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// Told (message index, when) as each message is handed to its producer.
    pub notify: Option<tokio::sync::mpsc::UnboundedSender<(usize, Instant)>>,
}

/// The partition a key goes to: Java's `String.hashCode`, sign-safe modulo.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let h = key.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    (h.rem_euclid(partitions as i32)) as u32
}

/// Producers on every partition of a topic.
pub struct Publisher {
    producers: Vec<Producer<TokioExecutor>>,
}

impl Publisher {
    /// Connects producers to the `partitions` partitions of `topic` (which must exist; 0: a non-partitioned topic).
    pub async fn connect(url: &str, topic: &Topic, partitions: u32) -> Result<Publisher> {
        let client: Pulsar<_> =
            Pulsar::builder(url, TokioExecutor).build().await.with_context(|| format!("connecting to {url}"))?;
        let names: Vec<String> =
            if partitions == 0 { vec![topic.full()] } else { (0..partitions).map(|i| topic.partition(i)).collect() };
        let mut producers = Vec::new();
        for name in names {
            let p = client
                .producer()
                .with_topic(&name)
                .with_options(ProducerOptions {
                    compression: Some(Compression::Zlib(CompressionZlib::default())),
                    batch_size: Some(1000),
                    batch_byte_size: Some(128 * 1024),
                    batch_timeout: Some(Duration::from_millis(10)),
                    block_queue_if_full: true,
                    ..Default::default()
                })
                .build()
                .await
                .with_context(|| format!("creating a producer on {name}"))?;
            producers.push(p);
        }
        Ok(Publisher { producers })
    }

    /// Publishes `messages` in order.
    pub async fn publish(&mut self, messages: &[Message], options: &Options) -> Result<Report> {
        let n = self.producers.len() as u32;
        let total_events: usize = messages.iter().map(|m| m.events as usize).sum();
        let sent = Arc::new(Mutex::new(vec![Sent::default(); messages.len()]));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, producer::SendFuture)>();
        let collector = {
            let sent = sent.clone();
            tokio::spawn(async move {
                while let Some((i, receipt)) = rx.recv().await {
                    let r = receipt.await.context("a message was not acknowledged by the broker")?;
                    if let Some(id) = r.message_id {
                        let mut s = sent.lock().expect("not poisoned");
                        s[i].ledger = id.ledger_id as i64;
                        s[i].entry = id.entry_id as i64;
                    }
                }
                anyhow::Ok(())
            })
        };
        let progress = options.progress && std::io::stderr().is_terminal();
        let started = Instant::now();
        let mut last_progress = started;
        let mut events = 0usize;
        let mut bytes = 0usize;
        for (i, m) in messages.iter().enumerate() {
            if let Some(rate) = options.rate {
                let due = started + Duration::from_secs_f64(events as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let partition = if n > 1 { partition_of(&m.key, n) } else { 0 };
            let msg = producer::Message {
                payload: m.payload.clone(),
                partition_key: Some(m.key.clone()),
                ..Default::default()
            };
            let now = Instant::now();
            let at = now - started;
            if let Some(n) = &options.notify {
                let _ = n.send((i, now));
            }
            let receipt = self.producers[partition as usize].send_non_blocking(msg).await?;
            {
                let mut s = sent.lock().expect("not poisoned");
                s[i].partition = partition;
                s[i].at = at;
            }
            tx.send((i, receipt)).map_err(|_| anyhow::anyhow!("the receipt collector stopped"))?;
            events += m.events as usize;
            bytes += m.payload.len();
            if progress && last_progress.elapsed() >= Duration::from_millis(250) {
                last_progress = Instant::now();
                let s = started.elapsed().as_secs_f64();
                eprint!(
                    "\r{:>5.1}% {events}/{total_events} events, {}/{} messages, {:.0} events/s   ",
                    100.0 * events as f64 / total_events.max(1) as f64,
                    i + 1,
                    messages.len(),
                    events as f64 / s.max(1e-9)
                );
            }
        }
        for p in &mut self.producers {
            p.send_batch().await?;
        }
        drop(tx);
        collector.await.context("the receipt collector panicked")??;
        if progress {
            eprintln!();
        }
        let sent = std::mem::take(&mut *sent.lock().expect("not poisoned"));
        Ok(Report { messages: messages.len(), events, bytes, elapsed: started.elapsed(), sent })
    }
}

#[cfg(test)]
mod tests {
    use super::partition_of;

    #[test]
    fn keys_route_like_javas_string_hash() {
        // "research-01".hashCode() in Java is 416138099.
        assert_eq!(partition_of("research-01", 4), 416138099 % 4);
        assert_eq!(partition_of("research-01", 7), 416138099 % 7);
        assert_eq!(partition_of("a", 1), 0);
        assert_eq!(partition_of("batch-07", 4), partition_of("batch-07", 4));
    }
}
