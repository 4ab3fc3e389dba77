//! Harness for `tests/faults.rs`: Pulsar topics and stats over the admin REST API, producers, the real binary as a
//! child process, private service instances (`scripts/services.sh` with its own state dir and ports), a realistic
//! event stream, and snapshots of every table the ingester writes, to compare exactly.
//!
//! Included by `tests/faults.rs` only (`#[path]`), so it may use that crate's `common` module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use lookout_ingester::config::Config;
use lookout_ingester::convert::Converter;
use lookout_ingester::proto::armadaevents::EventKind;
use pulsar::compression::{Compression, CompressionZlib};
use pulsar::routing_policy::RoutingPolicy;
use pulsar::{Producer, ProducerOptions, Pulsar, TokioExecutor, producer};
use sqlx::{Connection, Executor, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestDb;
use crate::support::events::*;
use crate::support::rows;

// ------------------------------------------------------------------------------------------------ HTTP

/// One HTTP/1.1 request (`Connection: close`); the status and the body (chunked bodies decoded). Status 0 when the
/// server cannot be reached.
pub async fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Accept: */*\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        Some(raw)
    };
    let Ok(Some(raw)) = tokio::time::timeout(Duration::from_secs(20), exchange).await else {
        return (0, String::new());
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    (status, if chunked { dechunk(body) } else { body.to_string() })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Sums every sample of a metric whose labels contain `labels` (e.g. `reason="undecodable"`; "" for all).
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{')))
        .filter(|l| labels.is_empty() || l.split(' ').next().is_some_and(|series| series.contains(labels)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        + 0.0 // an empty sum is -0
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------------------------------ Pulsar admin

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

    /// The subscription backlog of each partition (None when the broker does not answer).
    pub async fn backlogs(&self, topic: &str, partitions: u32, subscription: &str) -> Option<Vec<u64>> {
        let mut out = Vec::new();
        for p in 0..partitions {
            let stats = self.partition_stats(topic, p).await?;
            out.push(stats["subscriptions"][subscription]["msgBacklog"].as_u64().unwrap_or(0));
        }
        Some(out)
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
        let pos = stats["cursors"][subscription]["markDeletePosition"].as_str()?;
        let (l, e) = pos.split_once(':')?;
        Some((l.parse().ok()?, e.parse().ok()?))
    }

    pub async fn client(&self) -> Pulsar<TokioExecutor> {
        Pulsar::builder(self.url.clone(), TokioExecutor)
            .build()
            .await
            .unwrap_or_else(|e| panic!("Pulsar at {} is not reachable ({e}); run scripts/services.sh up", self.url))
    }

    /// A producer on `topic` (a partitioned topic routes by key, as Armada's producers do with the job set: the
    /// `RoundRobin` policy hashes the key when there is one; without a policy pulsar-rs ignores keys),
    /// batching and zlib like Armada's, or plain. Right after a (re)start the broker may still refuse producers:
    /// retried for up to a minute.
    pub async fn producer(&self, topic: &str, batched: bool) -> Producer<TokioExecutor> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let options = if batched {
                ProducerOptions {
                    batch_size: Some(100),
                    compression: Some(Compression::Zlib(CompressionZlib { level: flate2::Compression::fast() })),
                    block_queue_if_full: true,
                    routing_policy: Some(RoutingPolicy::RoundRobin),
                    ..Default::default()
                }
            } else {
                ProducerOptions {
                    block_queue_if_full: true,
                    routing_policy: Some(RoutingPolicy::RoundRobin),
                    ..Default::default()
                }
            };
            let made = async {
                let client =
                    Pulsar::builder(self.url.clone(), TokioExecutor).build().await.map_err(|e| e.to_string())?;
                client.producer().with_topic(topic).with_options(options).build().await.map_err(|e| e.to_string())
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

/// A message as published: its key (the job set) and its payload.
pub type Keyed = (String, Vec<u8>);

/// Publishes the messages in order (keyed; with a batching producer they go out in producer batches) and waits
/// for every receipt; returns each message's `(ledger, entry, batch index)`.
pub async fn publish(p: &mut Producer<TokioExecutor>, messages: &[Keyed]) -> Vec<(i64, i64, i32)> {
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
            let id = r.await.expect("receipt").message_id.expect("receipt carries a message id");
            ids.push((id.ledger_id as i64, id.entry_id as i64, id.batch_index.unwrap_or(0).max(0)));
        }
    }
    ids
}

// ------------------------------------------------------------------------------------------------ private services

/// A private PostgreSQL + Pulsar pair run by `scripts/services.sh` with its own state dir and ports, for the tests
/// that stop, kill and restart services (the shared pair is never touched).
pub const PRIVATE: [(&str, &str); 5] = [
    ("LI_STATE_DIR", "/var/tmp/li-test-faults"),
    ("LI_PG_PORT", "55461"),
    ("LI_PULSAR_PORT", "6661"),
    ("LI_PULSAR_WEB_PORT", "8061"),
    ("LI_PULSAR_BOOKIE_PORT", "3161"),
];

pub fn private_broker() -> Broker {
    Broker { url: "pulsar://127.0.0.1:6661".into(), admin: "http://127.0.0.1:8061".into() }
}

/// The private Postgres server's admin URL.
pub fn private_pg_url() -> String {
    "postgres://postgres@127.0.0.1:55461/lookout".into()
}

/// `scripts/services.sh <service> <command>` on the private pair; panics when it fails.
pub async fn private(service: &'static str, command: &'static str) {
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .args([service, command])
            .envs(PRIVATE)
            .status()
    })
    .await
    .unwrap()
    .expect("run scripts/services.sh");
    assert!(status.success(), "scripts/services.sh {service} {command} (private pair) failed");
    eprintln!("[faults] private {service} {command}: {:?}", started.elapsed());
}

/// Stops the private pair when dropped (also when the test fails).
pub struct PrivateGuard;

impl Drop for PrivateGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .arg("down")
            .envs(PRIVATE)
            .status();
    }
}

/// A migrated database on another server than `DATABASE_URL`'s (dropped at the end unless the test panicked).
pub struct ServerDb {
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
    name: String,
}

impl ServerDb {
    pub async fn create(admin_url: &str) -> ServerDb {
        let name = format!("li_faults_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to the private Postgres");
        admin.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.expect("create database");
        let _ = admin.close().await;
        let url = crate::common::with_database(admin_url, &name);
        let cfg =
            lookout_ingester::config::PostgresConfig { url: Some(url.clone()), pool_size: 4, ..Default::default() };
        let pool = lookout_ingester::db::pool(&cfg).await.expect("pool");
        lookout_ingester::migrate::migrate(&pool).await.expect("migrate");
        ServerDb { url, pool, admin_url: admin_url.to_string(), name }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept database {}", self.url);
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}

// ------------------------------------------------------------------------------------------------ the real binary

/// How to run one `lookout-ingester run` child.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    pub name: String,
    pub database_url: String,
    pub pulsar_url: String,
    pub topic: String,
    pub subscription: String,
    /// YAML appended to the configuration file (top-level keys; a `pulsar:` block given in full by the caller).
    pub yaml: String,
    /// `log.level` (a `tracing` filter).
    pub log_level: String,
}

/// A running `lookout-ingester run` process. Killed (SIGKILL) when dropped; its log (JSON lines) is printed when the
/// test fails.
pub struct Child {
    pub name: String,
    process: tokio::process::Child,
    pub pid: u32,
    pub http: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Child {
    /// Starts the binary and waits until it has logged its HTTP address (it has checked Postgres and the schema).
    pub async fn spawn(spec: &ChildSpec) -> Child {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        let yaml = format!(
            "metrics_bind: 127.0.0.1\nmetrics_port: 0\nlog:\n  format: json\n  level: \"{}\"\n{}",
            spec.log_level, spec.yaml
        );
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout-ingester"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--topic", &spec.topic, "--subscription", &spec.subscription])
            .env("DATABASE_URL", &spec.database_url)
            .env("PULSAR_URL", &spec.pulsar_url)
            .env_remove("RUST_LOG")
            .env_remove("LOOKOUT_INGESTER_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn lookout-ingester");
        let pid = process.id().expect("pid");
        let mut child =
            Child { name: spec.name.clone(), process, pid, http: "0.0.0.0:0".parse().unwrap(), log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(addr) = child.logged_http_addr() {
                child.http = addr;
                return child;
            }
            if let Ok(Some(status)) = child.process.try_wait() {
                panic!("{} exited at start ({status}):\n{}", child.name, child.log_tail(40));
            }
            assert!(Instant::now() < deadline, "{} did not start:\n{}", child.name, child.log_tail(40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logged_http_addr(&self) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "lookout-ingester started")
            .and_then(|v| v["http"].as_str().and_then(|a| a.parse().ok()))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log lines whose message contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http("GET", &format!("http://{}{path}", self.http), None).await
    }

    pub async fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{} /metrics", self.name);
        text
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(&format!("{} /readyz 200", self.name), timeout, || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// SIGKILL, and reaps it.
    pub async fn kill9(&mut self) {
        self.process.start_kill().expect("SIGKILL");
        let status = self.process.wait().await.expect("wait");
        assert!(!status.success(), "{} exited by itself before the kill ({status})", self.name);
    }

    /// SIGTERM (the process is not waited for).
    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {}", self.pid);
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.process.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("{} did not exit within {timeout:?}:\n{}", self.name, self.log_tail(40)),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} (pid {}), last lines ----\n{}\n----", self.name, self.pid, self.log_tail(60));
        }
        let _ = self.process.start_kill();
    }
}

// ------------------------------------------------------------------------------------------------ a realistic stream

/// The messages of one job's life, keyed by job set, in publish order (like `examples/sample_events.rs`): jobs that
/// succeed, fail with a category, are cancelled, rejected, or retried after a lease return and then preempted.
/// `tag` (≤ 8 characters) keeps ids unique per stream.
pub fn job_messages(tag: &str, i: usize, t0: i64) -> Vec<Keyed> {
    let queue = ["research", "batch", "gpu-train"][i % 3];
    let jobset = format!("{queue}-set-{}", i / 10);
    let job = format!("{tag}j{i:08}");
    let run = |n: usize| format!("{tag}-r{n}-{i:012}");
    let node = format!("node-{}", i % 7);
    let s = |t: i64, kind: EventKind| (jobset.clone(), seq(queue, &jobset).at(t, kind).encode());
    let cpu = ["500m", "2", "1.5"][i % 3];
    let pod_spec = pod(&[("cpu", cpu), ("memory", ["1Gi", "512Mi", "4Gi"][i % 3])], Some("armada-default"));
    let mut out = vec![s(t0, submit_job(&job, (i % 5) as u32, Some(pod_spec), &[("armadaproject.io/team", "ml")]))];
    let start = |out: &mut Vec<Keyed>, r: &str, t: i64| {
        out.push(s(t, leased(&job, r, "cluster-a", &node, "default")));
        // Armada compacts events of one job set into one sequence: assigned + running in one message.
        out.push((
            jobset.clone(),
            seq(queue, &jobset).at(t + 1, assigned(&job, r)).at(t + 2, running(&job, r, Some(&node))).encode(),
        ));
    };
    match i % 6 {
        0 | 1 => {
            start(&mut out, &run(1), t0 + 1);
            out.push(s(t0 + 20, run_succeeded(&job, &run(1))));
            out.push(s(t0 + 21, job_succeeded(&job)));
        }
        2 => {
            start(&mut out, &run(1), t0 + 1);
            let oom =
                error(true, pod_error("container main was OOMKilled", &node, &[137], "OOMKilled"), "oom", "limit");
            out.push(s(t0 + 15, run_errors(&job, &run(1), vec![oom.clone()])));
            out.push(s(t0 + 16, job_errors(&job, vec![oom])));
        }
        3 => {
            start(&mut out, &run(1), t0 + 1);
            out.push(s(t0 + 9, run_cancelled(&job, &run(1), "no longer needed", "alice")));
            out.push(s(t0 + 10, cancelled_job(&job, "no longer needed", "alice")));
        }
        4 => {
            let e = error(true, rejected("requested resources exceed the queue's limits"), "internal", "job-rejected");
            out.push(s(t0 + 1, job_errors(&job, vec![e])));
        }
        _ => {
            out.push(s(t0 + 1, leased(&job, &run(1), "cluster-a", &node, "default")));
            let returned = error(false, lease_returned("pod could not be scheduled", ""), "", "");
            out.push(s(t0 + 3, run_errors(&job, &run(1), vec![returned])));
            out.push(s(t0 + 4, requeued(&job)));
            start(&mut out, &run(2), t0 + 5);
            out.push(s(t0 + 8, run_preempted(&job, &run(2), "preempted by a higher-priority job", "01other", "")));
            out.push(s(t0 + 9, job_errors(&job, vec![error(true, preempted_error("preempted"), "", "")])));
        }
    }
    out
}

/// `jobs` jobs' messages interleaved in time like a live topic.
pub fn stream(tag: &str, jobs: usize, t0: i64) -> Vec<Keyed> {
    let mut timed: Vec<(i64, usize, usize, Keyed)> = Vec::new();
    for i in 0..jobs {
        let start = t0 + (i as i64) * 2;
        for (k, m) in job_messages(tag, i, start).into_iter().enumerate() {
            timed.push((start + k as i64 * 3, i, k, m));
        }
    }
    timed.sort_by_key(|(t, i, k, _)| (*t, *i, *k));
    timed.into_iter().map(|(_, _, _, m)| m).collect()
}

/// The same messages with a NUL byte in every sequence's user (`al\0ice`): the owner is stored as `alice` and the
/// original recorded in `lookout_ingester.sanitized_value`, once per message applied. A message applied twice (a
/// redelivery not skipped) leaves two rows, so any double application shows in the tables. Messages that do not
/// decode are left as they are.
pub fn witnessed(messages: Vec<Keyed>) -> Vec<Keyed> {
    use lookout_ingester::proto::armadaevents::EventSequence;
    use prost::Message as _;
    messages
        .into_iter()
        .map(|(key, payload)| match EventSequence::decode(payload.as_slice()) {
            Ok(mut seq) if !seq.events.is_empty() => {
                seq.user_id = lookout_ingester::proto::Bytes::from_static(b"al\0ice");
                (key, seq.encode_to_vec())
            }
            _ => (key, payload),
        })
        .collect()
}

/// Payloads only.
pub fn payloads(messages: &[Keyed]) -> Vec<Vec<u8>> {
    messages.iter().map(|(_, p)| p.clone()).collect()
}

// ------------------------------------------------------------------------------------------------ tables

/// A quarantine row: `(reason, event_kind, job_id, payload)`.
pub type Quarantined = (String, Option<String>, Option<String>, Vec<u8>);
/// A sanitized value: `(field, fix, job_id, run_id, original)`.
pub type Sanitized = (String, String, Option<String>, Option<String>, Vec<u8>);
/// A parked event: `(waits_for, event_kind, job_id, run_id, event bytes)`.
pub type Parked = (String, String, String, Option<String>, Vec<u8>);

/// Every table the ingester writes, in a form that compares exactly between the service and the `apply` path
/// (positions and times of the bookkeeping rows left out: they differ between a topic and a file).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub jobs: Vec<rows::Job>,
    pub runs: Vec<rows::Run>,
    /// `(job_id, job_spec bytes)` — the stored blob, compressed or not.
    pub job_specs: Vec<(String, Vec<u8>)>,
    /// `(job_id, error blob)`.
    pub job_errors: Vec<(String, Vec<u8>)>,
    pub quarantine: Vec<Quarantined>,
    pub sanitized: Vec<Sanitized>,
    pub parked: Vec<Parked>,
}

impl Snapshot {
    pub async fn read(pool: &PgPool) -> Snapshot {
        let job_specs = sqlx::query_as("SELECT job_id, job_spec FROM job_spec ORDER BY job_id")
            .fetch_all(pool)
            .await
            .expect("job_spec");
        let job_errors = sqlx::query_as("SELECT job_id, error FROM job_error ORDER BY job_id")
            .fetch_all(pool)
            .await
            .expect("job_error");
        let quarantine = sqlx::query_as(
            "SELECT reason, event_kind, job_id, payload FROM lookout_ingester.quarantine
                            ORDER BY reason, event_kind, job_id, payload",
        )
        .fetch_all(pool)
        .await
        .expect("quarantine");
        let sanitized = sqlx::query_as(
            "SELECT field, fix, job_id, run_id, original FROM lookout_ingester.sanitized_value
                           ORDER BY field, fix, job_id, run_id, original",
        )
        .fetch_all(pool)
        .await
        .expect("sanitized");
        let parked = sqlx::query_as(
            "SELECT waits_for, event_kind, job_id, run_id, event FROM lookout_ingester.parked_event
                        ORDER BY waits_for, event_kind, job_id, run_id, event",
        )
        .fetch_all(pool)
        .await
        .expect("parked");
        Snapshot {
            jobs: rows::jobs(pool).await,
            runs: rows::runs(pool).await,
            job_specs,
            job_errors,
            quarantine,
            sanitized,
            parked,
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} jobs, {} runs, {} job_spec, {} job_error, {} quarantined, {} sanitized, {} parked",
            self.jobs.len(),
            self.runs.len(),
            self.job_specs.len(),
            self.job_errors.len(),
            self.quarantine.len(),
            self.sanitized.len(),
            self.parked.len()
        )
    }
}

/// Fails showing the first difference of each table.
pub fn assert_same(got: &Snapshot, want: &Snapshot) {
    if got == want {
        return;
    }
    fn first<T: PartialEq + std::fmt::Debug>(table: &str, got: &[T], want: &[T]) -> Option<String> {
        if got == want {
            return None;
        }
        let at = got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
        let show = |v: Option<&T>| v.map(|r| format!("{r:?}")).unwrap_or_else(|| "(none)".into());
        let cut = |s: String| if s.len() > 1500 { format!("{}…", &s[..1500]) } else { s };
        Some(format!(
            "{table}: {} rows, want {}; first difference at {at}:\n  got  {}\n  want {}",
            got.len(),
            want.len(),
            cut(show(got.get(at))),
            cut(show(want.get(at)))
        ))
    }
    let diffs: Vec<String> = [
        first("job", &got.jobs, &want.jobs),
        first("job_run", &got.runs, &want.runs),
        first("job_spec", &got.job_specs, &want.job_specs),
        first("job_error", &got.job_errors, &want.job_errors),
        first("quarantine", &got.quarantine, &want.quarantine),
        first("sanitized_value", &got.sanitized, &want.sanitized),
        first("parked_event", &got.parked, &want.parked),
    ]
    .into_iter()
    .flatten()
    .collect();
    panic!("tables differ from the reference:\n{}", diffs.join("\n"));
}

/// The tables the `apply` path (no Pulsar) gives for the same messages, in a fresh database: what the service must
/// end with. `batch_events` only changes how the file is cut into transactions, never the result.
pub async fn reference(messages: &[Vec<u8>], config: &Config, batch_events: usize) -> Snapshot {
    let db = TestDb::migrated().await;
    crate::support::ingest::ingest_with(&db.url, messages, batch_events, Converter::from_config(config)).await;
    Snapshot::read(&db.pool).await
}

/// Committed positions `(topic → (ledger, entry, batch index))` of a subscription.
pub async fn positions(pool: &PgPool, subscription: &str) -> BTreeMap<String, (i64, i64, i32)> {
    let rows: Vec<(String, i64, i64, i32)> = sqlx::query_as(
        "SELECT topic, ledger_id, entry_id, batch_index FROM lookout_ingester.consumer_position WHERE subscription = $1",
    )
    .bind(subscription)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.into_iter().map(|(t, l, e, b)| (t, (l, e, b))).collect()
}

pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
