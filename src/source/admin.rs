//! The Pulsar admin REST API client (`/admin/v2/...`, over `reqwest`), the only one in the crate: the watchdog's topic
//! stats; for `replay` and `rewind` a topic's partitions, a partition's last message id, ledger layout and
//! subscriptions, the message id at a publish time, creating or resetting a subscription's cursor; for `loadgen` and
//! `bench` creating and deleting partitioned topics and reading subscription cursors.
//!
//! One client type, [`Admin`], one way to authenticate: the base URL is the service's (`pulsar.rest_url`, else
//! derived from `pulsar.url`); the JWT, when Pulsar authentication is on, is sent as a bearer token, read again for
//! each request (a token file may be rotated); `https://` verifies the broker against
//! `pulsar.tls_trust_certs_file_path` (and the usual web roots). Answers are read up to [`MAX_ANSWER`] bytes.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::settings::{Settings, Token};
use crate::config::Config;
use crate::message::MessageId;

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest admin API answer read (a guard against a runaway answer; real ones are far smaller).
const MAX_ANSWER: usize = 64 << 20;

/// An admin API client for one broker cluster.
#[derive(Clone, Debug)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: Option<Token>,
}

/// A message id as the admin API writes it (`MessageIdImpl`, or `BatchMessageIdImpl` with `batchIndex`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdminMessageId {
    pub ledger_id: i64,
    pub entry_id: i64,
    #[serde(default = "minus_one")]
    pub batch_index: i32,
}

fn minus_one() -> i32 {
    -1
}

impl AdminMessageId {
    /// `None` for "no message" (an empty topic answers entry -1); else its id, batch index 0 when not batched.
    pub fn id(self) -> Option<MessageId> {
        (self.ledger_id >= 0 && self.entry_id >= 0).then_some(MessageId::new(
            self.ledger_id,
            self.entry_id,
            self.batch_index.max(0),
        ))
    }
}

/// The ledgers of a partition, from its internal stats: `(ledger id, entries)` in order, the open one last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledgers(pub Vec<(i64, i64)>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InternalStats {
    #[serde(default)]
    ledgers: Vec<LedgerInfo>,
    #[serde(default)]
    last_confirmed_entry: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LedgerInfo {
    ledger_id: i64,
    #[serde(default)]
    entries: i64,
}

impl Admin {
    /// The admin client the configuration describes.
    pub fn from_config(config: &Config) -> anyhow::Result<Admin> {
        Admin::from_settings(&Settings::from_config(config)?)
    }

    /// The admin client of the source's settings: their admin URL, token and trust certificate.
    pub(super) fn from_settings(settings: &Settings) -> anyhow::Result<Admin> {
        let base = settings.admin_url.clone().context(
            "the Pulsar admin API is needed: set pulsar.rest_url (its address could not be derived from pulsar.url)",
        )?;
        let mut http = reqwest::Client::builder().timeout(TIMEOUT).connect_timeout(Duration::from_secs(10));
        if let Some(path) = settings.admin_trust_certs.as_ref().filter(|_| base.starts_with("https://")) {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", path.display()))?,
            );
        }
        let http = http.build().context("cannot build the admin API client")?;
        Ok(Admin { http, base, token: settings.token.clone() })
    }

    /// A client for `base` (`http://host:port`) without authentication.
    pub fn new(base: &str) -> Admin {
        Admin { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_string(), token: None }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}/admin/v2/persistent/tenant/ns/topic{suffix}` for a full topic name.
    fn url(&self, topic: &str, suffix: &str) -> String {
        format!("{}/admin/v2/{}{suffix}", self.base, topic.replacen("://", "/", 1))
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self.http.request(method.clone(), url).header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.read().context("the Pulsar token for the admin API")?);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.with_context(|| format!("{method} {url}: reading the answer"))? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                bail!("{method} {url}: answer larger than {MAX_ANSWER} bytes");
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<Option<T>> {
        let (status, text) = self.call(Method::GET, url, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {}", text.trim());
        }
        serde_json::from_str(&text).map(Some).with_context(|| format!("GET {url}: unexpected answer {text:?}"))
    }

    /// The partition topics of `topic` in index order, or the topic itself when it is not partitioned. An error when
    /// the topic does not exist.
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Meta {
            partitions: u32,
        }
        let meta: Option<Meta> = self.get_json(&self.url(topic, "/partitions")).await?;
        let n = meta.map_or(0, |m| m.partitions);
        if n > 0 {
            return Ok((0..n).map(|i| format!("{topic}-partition-{i}")).collect());
        }
        // Not partitioned: it must exist (the partitions call answers 0 for unknown topics too).
        if self.get_json::<serde_json::Value>(&self.url(topic, "/lastMessageId")).await?.is_none() {
            bail!("topic {topic} does not exist");
        }
        Ok(vec![topic.to_string()])
    }

    /// The last message id of a partition (entry -1 when it has none).
    pub async fn last_message_id(&self, partition: &str) -> anyhow::Result<AdminMessageId> {
        let url = self.url(partition, "/lastMessageId");
        self.get_json(&url).await?.with_context(|| format!("GET {url}: not found"))
    }

    /// The first message published at or after `time_ms` on a partition, `None` when there is none.
    pub async fn message_id_at(&self, partition: &str, time_ms: i64) -> anyhow::Result<Option<AdminMessageId>> {
        let url = self.url(partition, &format!("/messageid/{time_ms}"));
        let (status, text) = self.call(Method::GET, &url, None).await?;
        // Pulsar answers 404 (or, in some versions, 412/500 "not found") when no message is that late.
        if !status.is_success() {
            if status == StatusCode::NOT_FOUND || text.to_ascii_lowercase().contains("not found") {
                return Ok(None);
            }
            bail!("GET {url}: HTTP {status}: {}", text.trim());
        }
        let answer: AdminMessageId =
            serde_json::from_str(&text).with_context(|| format!("GET {url}: unexpected answer {text:?}"))?;
        Ok(answer.id().map(|_| answer))
    }

    /// The ledgers of a partition and how many entries each holds.
    pub async fn ledgers(&self, partition: &str) -> anyhow::Result<Ledgers> {
        let url = self.url(partition, "/internalStats");
        let stats: InternalStats = self.get_json(&url).await?.with_context(|| format!("GET {url}: not found"))?;
        let last = stats.last_confirmed_entry.as_deref().and_then(parse_position);
        let ledgers = stats
            .ledgers
            .iter()
            .map(|l| {
                // The open ledger reports 0 entries; the last confirmed entry says how many it has.
                let entries = match last {
                    Some((ledger, entry)) if ledger == l.ledger_id => (entry + 1).max(l.entries),
                    _ => l.entries,
                };
                (l.ledger_id, entries)
            })
            .collect();
        Ok(Ledgers(ledgers))
    }

    /// The subscriptions of a partition.
    pub async fn subscriptions(&self, partition: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.get_json(&self.url(partition, "/subscriptions")).await?.unwrap_or_default())
    }

    /// A partition's topic stats (`None`: no such topic).
    pub async fn stats(&self, partition: &str) -> anyhow::Result<Option<serde_json::Value>> {
        self.get_json(&self.url(partition, "/stats")).await
    }

    /// The names of the consumers connected to `subscription` on a partition (empty when it has none or does not
    /// exist).
    pub async fn consumers(&self, partition: &str, subscription: &str) -> anyhow::Result<Vec<String>> {
        let stats = self.stats(partition).await?.unwrap_or_default();
        let consumers = stats["subscriptions"][subscription]["consumers"].as_array().cloned().unwrap_or_default();
        Ok(consumers.iter().map(|c| c["consumerName"].as_str().unwrap_or("(unnamed)").to_string()).collect())
    }

    /// Moves `subscription`'s cursor on one partition so that the next message it delivers is `(ledger, entry)`
    /// (the whole entry: Pulsar resets to entries).
    pub async fn reset_cursor(&self, partition: &str, subscription: &str, at: MessageId) -> anyhow::Result<()> {
        let url = self.url(partition, &format!("/subscription/{}/resetcursor", encode(subscription)));
        let body = serde_json::json!({ "ledgerId": at.ledger, "entryId": at.entry, "isExcluded": false });
        let (status, text) = self.call(Method::POST, &url, Some(body)).await?;
        if !status.is_success() {
            bail!("resetting the cursor of {subscription} on {partition}: HTTP {status}: {}", text.trim());
        }
        Ok(())
    }

    /// Creates the durable `subscription` on one partition, its first message `(ledger, entry)`, or the earliest
    /// with `None`. Fails when it exists.
    pub async fn create_subscription(
        &self,
        partition: &str,
        subscription: &str,
        at: Option<(i64, i64)>,
    ) -> anyhow::Result<()> {
        let url = self.url(partition, &format!("/subscription/{}", encode(subscription)));
        // Pulsar's `MessageId.earliest` is (-1, -1).
        let (ledger, entry) = at.unwrap_or((-1, -1));
        let body = serde_json::json!({ "ledgerId": ledger, "entryId": entry });
        let (status, text) = self.call(Method::PUT, &url, Some(body)).await?;
        if !status.is_success() {
            bail!("creating subscription {subscription} on {partition}: HTTP {status}: {}", text.trim());
        }
        Ok(())
    }

    /// Creates `topic` (full name) with `partitions` partitions; an existing topic with as many is accepted.
    pub async fn create_partitioned(&self, topic: &str, partitions: u32) -> anyhow::Result<()> {
        let url = self.url(topic, "/partitions");
        let (status, text) = self.call(Method::PUT, &url, Some(serde_json::json!(partitions))).await?;
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::CONFLICT && self.partition_count(topic).await? == partitions {
            return Ok(());
        }
        bail!("creating {topic} with {partitions} partitions: HTTP {status}: {}", text.trim())
    }

    /// How many partitions `topic` has (0: not partitioned, or not created yet).
    pub async fn partition_count(&self, topic: &str) -> anyhow::Result<u32> {
        let meta: Option<serde_json::Value> = self.get_json(&self.url(topic, "/partitions")).await?;
        Ok(meta.and_then(|m| m["partitions"].as_u64()).unwrap_or(0) as u32)
    }

    /// Deletes a partitioned topic and its subscriptions (a topic that does not exist is fine).
    pub async fn delete_partitioned(&self, topic: &str) -> anyhow::Result<()> {
        let url = self.url(topic, "/partitions?force=true");
        let (status, text) = self.call(Method::DELETE, &url, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        bail!("deleting {topic}: HTTP {status}: {}", text.trim())
    }

    /// The mark-delete position `(ledger, entry)` of `subscription` on each of `partitions` partitions; `None` where
    /// the subscription does not exist yet.
    pub async fn mark_deletes(
        &self,
        topic: &str,
        partitions: u32,
        subscription: &str,
    ) -> anyhow::Result<Vec<Option<(i64, i64)>>> {
        let mut out = Vec::with_capacity(partitions as usize);
        for i in 0..partitions {
            let url = self.url(&format!("{topic}-partition-{i}"), "/internalStats");
            let stats: serde_json::Value =
                self.get_json(&url).await?.with_context(|| format!("GET {url}: not found"))?;
            out.push(stats["cursors"][subscription]["markDeletePosition"].as_str().and_then(parse_position));
        }
        Ok(out)
    }

    /// Creates `subscription` on every partition of `topic`, at its earliest message. An existing subscription is
    /// fine.
    pub async fn ensure_subscription(&self, topic: &str, subscription: &str) -> anyhow::Result<()> {
        let url = self.url(topic, &format!("/subscription/{}", encode(subscription)));
        let earliest = serde_json::json!({ "ledgerId": -1, "entryId": -1 });
        let (status, text) = self.call(Method::PUT, &url, Some(earliest)).await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        bail!("creating subscription {subscription} on {topic}: HTTP {status}: {}", text.trim())
    }
}

/// `ledger:entry` as Pulsar's stats write positions.
pub fn parse_position(s: &str) -> Option<(i64, i64)> {
    let (l, e) = s.split_once(':')?;
    Some((l.parse().ok()?, e.parse().ok()?))
}

/// Percent-encodes a path segment (subscription names may hold any character).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Ledgers {
    /// How many entries lie from `from` to `to`, both included (`(ledger, entry)`); 0 when `from` is after `to`.
    pub fn entries_between(&self, from: (i64, i64), to: (i64, i64)) -> u64 {
        if from > to {
            return 0;
        }
        let mut n = 0i64;
        for &(ledger, entries) in &self.0 {
            if ledger < from.0 || ledger > to.0 || entries <= 0 {
                continue;
            }
            let first = if ledger == from.0 { from.1.max(0) } else { 0 };
            let last = if ledger == to.0 { to.1.min(entries - 1) } else { entries - 1 };
            n += (last - first + 1).max(0);
        }
        n as u64
    }

    /// The first entry held, if any.
    pub fn first(&self) -> Option<(i64, i64)> {
        self.0.iter().find(|(_, entries)| *entries > 0).map(|(ledger, _)| (*ledger, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_counted_across_ledgers() {
        let l = Ledgers(vec![(10, 5), (12, 0), (15, 3), (20, 4)]);
        assert_eq!(l.entries_between((10, 0), (20, 3)), 12);
        assert_eq!(l.entries_between((10, 3), (15, 1)), 4);
        assert_eq!(l.entries_between((15, 2), (15, 2)), 1);
        assert_eq!(l.entries_between((20, 0), (10, 4)), 0);
        assert_eq!(l.entries_between((11, 0), (19, 9)), 3);
        assert_eq!(l.first(), Some((10, 0)));
        assert_eq!(Ledgers(vec![(3, 0)]).first(), None);
    }

    #[test]
    fn message_ids_from_the_admin_api() {
        let plain: AdminMessageId = serde_json::from_str(r#"{"ledgerId":7,"entryId":3,"partitionIndex":-1}"#).unwrap();
        assert_eq!(plain.id(), Some(MessageId::new(7, 3, 0)));
        let batch: AdminMessageId =
            serde_json::from_str(r#"{"ledgerId":7,"entryId":3,"partitionIndex":1,"batchIndex":4}"#).unwrap();
        assert_eq!(batch.id(), Some(MessageId::new(7, 3, 4)));
        let empty: AdminMessageId = serde_json::from_str(r#"{"ledgerId":9,"entryId":-1}"#).unwrap();
        assert_eq!(empty.id(), None);
    }

    /// Serves `answers` requests on a local port with `{}`; returns the base URL and, at the end, each request's
    /// `Authorization` header.
    async fn recording_server(answers: usize) -> (String, tokio::task::JoinHandle<Vec<Option<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..answers {
                let (mut conn, _) = listener.accept().await.unwrap();
                let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                seen.push(head.lines().find(|l| l.starts_with("authorization:")).map(str::to_string));
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        (base, server)
    }

    #[tokio::test]
    async fn a_token_file_is_read_again_for_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let (base, server) = recording_server(2).await;
        let admin = Admin { token: Some(Token::File(path.clone())), ..Admin::new(&base) };
        admin.stats("persistent://public/default/t").await.unwrap();
        std::fs::write(&path, "second\n").unwrap();
        admin.stats("persistent://public/default/t").await.unwrap();
        let seen = server.await.unwrap();
        let want = ["authorization: bearer first", "authorization: bearer second"].map(|h| Some(h.to_string()));
        assert_eq!(seen, want);
    }

    #[test]
    fn urls_and_names() {
        let a = Admin::new("http://127.0.0.1:8080/");
        assert_eq!(
            a.url("persistent://public/default/t-partition-1", "/stats"),
            "http://127.0.0.1:8080/admin/v2/persistent/public/default/t-partition-1/stats"
        );
        assert_eq!(encode("lookout-ingester-v2"), "lookout-ingester-v2");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
