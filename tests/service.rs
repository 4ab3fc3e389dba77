//! The service end to end against a real Pulsar and a real Postgres: `startup::App` consuming a partitioned topic
//! that a real producer fills (zlib, producer batching), checked row by row against the `apply` path, through
//! `/metrics` and `/readyz`, the subscription backlog and the committed positions.
//!
//! Needs `DATABASE_URL` (a role that can create databases, see `tests/common`), Pulsar at
//! `PULSAR_URL` (default `pulsar://127.0.0.1:6650`) and its admin API at `PULSAR_ADMIN_URL` (default
//! `http://127.0.0.1:8080`); `scripts/services.sh up` provides both. `LI_TEST_LOG=debug` shows the service's logs.

mod common;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::TestDb;
use lookout_ingester::config::{Config, InitialPosition, LogFormat};
use lookout_ingester::convert::Converter;
use lookout_ingester::startup::App;
use pulsar::compression::{Compression, CompressionLz4, CompressionSnappy, CompressionZlib, CompressionZstd};
use pulsar::{Producer, ProducerOptions, Pulsar, TokioExecutor};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use support::events::*;
use support::rows;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: i64 = 1_700_000_000;
const WAIT: Duration = Duration::from_secs(90);

/// A Pulsar broker: its service URL and admin URL.
#[derive(Clone, Debug)]
struct Broker {
    url: String,
    admin: String,
}

/// The shared broker of the test environment.
fn broker() -> Broker {
    Broker {
        url: std::env::var("PULSAR_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6650".into()),
        admin: std::env::var("PULSAR_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
    }
}

fn init_logs() {
    if let Ok(level) = std::env::var("LI_TEST_LOG") {
        lookout_ingester::telemetry::init(LogFormat::Text, &level);
    }
}

// ------------------------------------------------------------------------------------------------ HTTP (tiny client)

/// One HTTP/1.1 request (`Connection: close`); returns the status and the body (chunked bodies are decoded).
async fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Accept: */*\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    (status, body)
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

/// Sums every sample of a metric (all label sets) in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{')))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn get(app_addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http("GET", &format!("http://{app_addr}{path}"), None).await
}

// ------------------------------------------------------------------------------------------------ Pulsar

/// A fresh partitioned topic; returns its full name.
async fn create_partitioned_topic(b: &Broker, name: &str, partitions: u32) -> String {
    let url = format!("{}/admin/v2/persistent/public/default/{name}/partitions", b.admin);
    let (status, body) = http("PUT", &url, Some(&partitions.to_string())).await;
    assert!(status == 204 || status == 200, "creating topic {name}: HTTP {status} {body}");
    format!("persistent://public/default/{name}")
}

/// The subscription backlog of one partition (0 when the subscription does not exist yet).
async fn backlog(b: &Broker, topic: &str, partition: u32, subscription: &str) -> u64 {
    let short = topic.trim_start_matches("persistent://");
    let url = format!("{}/admin/v2/persistent/{short}-partition-{partition}/stats", b.admin);
    let (status, body) = http("GET", &url, None).await;
    assert_eq!(status, 200, "stats of {short}-partition-{partition}: {body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats JSON: {e}: {body}"));
    stats["subscriptions"][subscription]["msgBacklog"].as_u64().unwrap_or(0)
}

/// A fresh non-partitioned topic; returns its full name.
async fn create_topic(b: &Broker, name: &str) -> String {
    let url = format!("{}/admin/v2/persistent/public/default/{name}", b.admin);
    let (status, body) = http("PUT", &url, None).await;
    assert!(status == 204 || status == 200, "creating topic {name}: HTTP {status} {body}");
    format!("persistent://public/default/{name}")
}

/// Unloads a topic: the broker closes its consumers, which reconnect and get everything unacknowledged again.
async fn unload(b: &Broker, topic: &str) {
    let short = topic.trim_start_matches("persistent://");
    let (status, body) = http("PUT", &format!("{}/admin/v2/persistent/{short}/unload", b.admin), None).await;
    assert!(status == 204 || status == 200, "unloading {short}: HTTP {status} {body}");
}

/// Consumers connected to a subscription of a non-partitioned topic.
async fn topic_consumers(b: &Broker, topic: &str, subscription: &str) -> usize {
    let short = topic.trim_start_matches("persistent://");
    let (status, body) = http("GET", &format!("{}/admin/v2/persistent/{short}/stats", b.admin), None).await;
    assert_eq!(status, 200, "stats of {short}: {body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats JSON: {e}: {body}"));
    stats["subscriptions"][subscription]["consumers"].as_array().map_or(0, Vec::len)
}

/// The subscription backlog of a non-partitioned topic.
async fn topic_backlog(b: &Broker, topic: &str, subscription: &str) -> u64 {
    let short = topic.trim_start_matches("persistent://");
    let (status, body) = http("GET", &format!("{}/admin/v2/persistent/{short}/stats", b.admin), None).await;
    assert_eq!(status, 200, "stats of {short}: {body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats JSON: {e}: {body}"));
    stats["subscriptions"][subscription]["msgBacklog"].as_u64().unwrap_or(0)
}

async fn client(b: &Broker) -> Pulsar<TokioExecutor> {
    Pulsar::builder(b.url.clone(), TokioExecutor)
        .build()
        .await
        .unwrap_or_else(|e| panic!("Pulsar at {} is not reachable ({e}); run scripts/services.sh up", b.url))
}

/// A producer on one partition: batching and zlib like Armada's producers, or plain.
async fn producer(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    partition: u32,
    batched: bool,
) -> Producer<TokioExecutor> {
    let options = if batched {
        ProducerOptions {
            batch_size: Some(1000),
            compression: Some(Compression::Zlib(CompressionZlib { level: flate2::Compression::fast() })),
            ..Default::default()
        }
    } else {
        ProducerOptions::default()
    };
    client
        .producer()
        .with_topic(format!("{topic}-partition-{partition}"))
        .with_options(options)
        .build()
        .await
        .expect("producer")
}

/// A batching zlib producer on a non-partitioned topic.
async fn topic_producer(client: &Pulsar<TokioExecutor>, topic: &str) -> Producer<TokioExecutor> {
    let options = ProducerOptions {
        batch_size: Some(1000),
        compression: Some(Compression::Zlib(CompressionZlib { level: flate2::Compression::fast() })),
        ..Default::default()
    };
    client.producer().with_topic(topic).with_options(options).build().await.expect("producer")
}

/// Publishes the messages as one producer batch (one entry) and returns each message's `(ledger, entry, index)`.
async fn publish_entry(p: &mut Producer<TokioExecutor>, messages: &[Vec<u8>]) -> Vec<(i64, i64, i32)> {
    let mut receipts = Vec::new();
    for m in messages {
        receipts.push(p.send_non_blocking(m.clone()).await.expect("queue message"));
    }
    p.send_batch().await.expect("flush batch");
    let mut ids = Vec::new();
    for r in receipts {
        ids.push(receipt_id(r.await.expect("receipt")));
    }
    ids
}

/// Publishes each message on its own (one entry each, when the producer does not batch).
async fn publish_each(p: &mut Producer<TokioExecutor>, messages: &[Vec<u8>]) -> Vec<(i64, i64, i32)> {
    let mut ids = Vec::new();
    for m in messages {
        let receipt = p.send_non_blocking(m.clone()).await.expect("send").await.expect("receipt");
        ids.push(receipt_id(receipt));
    }
    ids
}

fn receipt_id(r: pulsar::proto::CommandSendReceipt) -> (i64, i64, i32) {
    let id = r.message_id.expect("receipt carries a message id");
    (id.ledger_id as i64, id.entry_id as i64, id.batch_index.unwrap_or(0).max(0))
}

// ------------------------------------------------------------------------------------------------ Postgres

/// The rows the `apply` path (no Pulsar) gives for the same messages: what the service must converge to.
async fn reference(messages: &[Vec<u8>], config: &Config) -> (Vec<rows::Job>, Vec<rows::Run>) {
    let db = TestDb::migrated().await;
    support::ingest::ingest_with(&db.url, messages, 7, Converter::from_config(config)).await;
    (rows::jobs(&db.pool).await, rows::runs(&db.pool).await)
}

/// Polls until the service's `job` and `job_run` rows equal `want`; on timeout fails showing the first difference.
async fn assert_rows_converge(pool: &PgPool, want: &(Vec<rows::Job>, Vec<rows::Run>)) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = (rows::jobs(pool).await, rows::runs(pool).await);
        if &got == want {
            return;
        }
        if Instant::now() >= deadline {
            assert_eq!(got.0.len(), want.0.len(), "job rows");
            assert_eq!(got.1.len(), want.1.len(), "job_run rows");
            for (g, w) in got.0.iter().zip(&want.0) {
                assert_eq!(g, w, "job row differs from the reference");
            }
            for (g, w) in got.1.iter().zip(&want.1) {
                assert_eq!(g, w, "job_run row differs from the reference");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn committed_position(pool: &PgPool, subscription: &str, topic: &str) -> Option<(i64, i64, i32)> {
    sqlx::query_as(
        "SELECT ledger_id, entry_id, batch_index FROM lookout_ingester.consumer_position
         WHERE subscription = $1 AND topic = $2",
    )
    .bind(subscription)
    .bind(topic)
    .fetch_optional(pool)
    .await
    .expect("read position")
}

// ------------------------------------------------------------------------------------------------ the app

fn config(db: &TestDb, b: &Broker, topic: &str, subscription: &str) -> Config {
    let mut c = Config::default();
    c.postgres.url = Some(db.url.clone());
    c.pulsar.url = b.url.clone();
    c.pulsar.jobset_events_topic = topic.to_string();
    c.pulsar.consumer_name = Some(format!("test-{subscription}"));
    c.subscription_name = subscription.to_string();
    c.initial_position = InitialPosition::Earliest;
    c.metrics_bind = "127.0.0.1".into();
    c.metrics_port = 0;
    c.batch_duration = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(10);
    c.zombie_check_interval = Duration::from_secs(1);
    c.max_backoff = 2;
    // As Armada's default lookout-ingester configuration has it.
    c.annotations.user_annotation_prefix = Some("armadaproject.io/".into());
    c
}

async fn start(config: Config) -> App {
    tokio::time::timeout(Duration::from_secs(60), App::build(config)).await.expect("start in time").expect("start")
}

async fn stop(app: App) {
    app.shutdown();
    tokio::time::timeout(Duration::from_secs(60), app.wait()).await.expect("stops in time").expect("clean stop");
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------------------------------ events

/// The messages of one job, as its producers would publish them (one message per step; step 2 is a compacted
/// sequence of two events). Every 5th job is cancelled while running, every 7th fails.
fn job_messages(i: usize) -> Vec<Vec<u8>> {
    let job = format!("job-{i:04}");
    let run = format!("00000000-0000-0000-0000-{i:012}");
    let js = format!("js-{}", i % 4);
    let t = T0 + i as i64 * 10;
    let s = || seq("queue-a", &js);
    let pod_spec = pod(&[("cpu", "250m"), ("memory", "512Mi")], Some("armada-default"));
    let mut out = vec![
        s().at(t, submit_job(&job, 3, Some(pod_spec), &[("armadaproject.io/team", "ml")])),
        s().at(t + 1, leased(&job, &run, "cluster-1", "node-1", "default")),
        s().at(t + 2, assigned(&job, &run)).at(t + 3, running(&job, &run, Some("node-1"))),
    ];
    if i.is_multiple_of(5) {
        out.push(s().at(t + 4, run_cancelled(&job, &run, "user", "alice")));
        out.push(s().at(t + 5, cancelled_job(&job, "user", "alice")));
    } else if i.is_multiple_of(7) {
        let err = error(true, pod_error("OOMKilled", "node-1", &[137], "debug"), "oom", "");
        out.push(s().at(t + 4, run_errors(&job, &run, vec![err.clone()])));
        out.push(s().at(t + 5, job_errors(&job, vec![err])));
    } else {
        out.push(s().at(t + 4, run_succeeded(&job, &run)));
        out.push(s().at(t + 5, job_succeeded(&job)));
    }
    out.iter().map(Seq::encode).collect()
}

/// Job `i` goes to partition `(i % 4) % 2` (its job set's partition).
fn partition_of(i: usize) -> u32 {
    ((i % 4) % 2) as u32
}

// ------------------------------------------------------------------------------------------------ tests

/// N jobs over a 2-partition topic; partition 0 is written by a batching zlib producer (entries of several
/// messages), partition 1 by a plain one. The service must converge to exactly the rows the apply path gives,
/// commit the last position of each partition, acknowledge everything (backlog 0), report it in /metrics, be
/// ready, and stop cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_a_partitioned_topic_end_to_end() {
    init_logs();
    let b = broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-e2e-{id}"), format!("li-e2e-{id}"));
    let topic = create_partitioned_topic(&b, &name, 2).await;
    let db = TestDb::migrated().await;
    let cfg = config(&db, &b, &name, &sub);
    let app = start(cfg.clone()).await;
    let addr = app.http_addr();
    eventually("/readyz 200", || async { (get(addr, "/readyz").await.0 == 200).then_some(()) }).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);

    const JOBS: usize = 24;
    let pulsar = client(&b).await;
    let mut p0 = producer(&pulsar, &topic, 0, true).await;
    let mut p1 = producer(&pulsar, &topic, 1, false).await;
    let per_job: Vec<Vec<Vec<u8>>> = (0..JOBS).map(job_messages).collect();
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut last: HashMap<u32, (i64, i64, i32)> = HashMap::new();
    let steps = per_job.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..steps {
        // One round: step `step` of every job; partition 0's share goes out as one producer batch.
        let mut round: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for (i, msgs) in per_job.iter().enumerate() {
            if let Some(m) = msgs.get(step) {
                round[partition_of(i) as usize].push(m.clone());
            }
        }
        let ids0 = publish_entry(&mut p0, &round[0]).await;
        let ids1 = publish_each(&mut p1, &round[1]).await;
        assert!(ids0.windows(2).all(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1)), "a round is one entry: {ids0:?}");
        if let Some(l) = ids0.last() {
            last.insert(0, *l);
        }
        if let Some(l) = ids1.last() {
            last.insert(1, *l);
        }
        all.extend(round[0].iter().cloned());
        all.extend(round[1].iter().cloned());
    }
    let messages = all.len();

    let want = reference(&all, &cfg).await;
    assert_eq!((want.0.len(), want.1.len()), (JOBS, JOBS));
    let pool = db.pool.clone();
    assert_rows_converge(&pool, &want).await;

    // The committed position of each partition is its last message, under the full partition topic name.
    for partition in [0u32, 1] {
        let expected = last[&partition];
        let topic_p = format!("{topic}-partition-{partition}");
        eventually("the last position committed", || {
            let (pool, topic_p, sub) = (pool.clone(), topic_p.clone(), sub.clone());
            async move { (committed_position(&pool, &sub, &topic_p).await == Some(expected)).then_some(()) }
        })
        .await;
    }
    // Every entry acknowledged.
    eventually("backlog 0 on both partitions", || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (backlog(&b, &topic, 0, &sub).await == 0 && backlog(&b, &topic, 1, &sub).await == 0).then_some(()) }
    })
    .await;
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 0);

    // Metrics (process-wide counters: another test may add to them, so at least).
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let n = messages as f64;
    assert!(metric_sum(&text, "lookout_ingester_messages_consumed_total") >= n, "{text}");
    assert!(metric_sum(&text, "lookout_ingester_events_consumed_total") >= n + JOBS as f64, "{text}");
    assert!(metric_sum(&text, "lookout_ingester_rows_written_total") >= (2 * JOBS) as f64, "{text}");
    assert!(metric_sum(&text, "armada_lookout_ingester_v2_pulsar_messages_processed") >= n, "{text}");
    assert!(metric_sum(&text, "lookout_ingester_publish_to_commit_seconds_count") >= n, "{text}");
    assert!(text.contains("lookout_ingester_lag_seconds{partition=\""), "{text}");
    assert!(text.contains("lookout_ingester_zombie_jobs"), "{text}");
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));

    let started = Instant::now();
    stop(app).await;
    eprintln!("{messages} messages over 2 partitions; clean stop in {:?}", started.elapsed());
}

/// One producer batch (an entry of 5 messages) is split across DB batches (batch_size 2), and the process stops
/// after the first part committed while the next is blocked in Postgres. The entry must not be acknowledged; after
/// a restart it is delivered again whole, the committed part is skipped, the rest applied: the final rows equal
/// the reference and the position ends at the entry's last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_split_across_batches_survives_a_stop_between_them() {
    init_logs();
    let b = broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-split-{id}"), format!("li-split-{id}"));
    let topic = create_partitioned_topic(&b, &name, 2).await;
    let db = TestDb::migrated().await;

    let js = |j: &str| seq("queue-b", j);
    // Partition 0: one entry. Its first two messages only create jobs; the rest create runs (job_run writes).
    let entry: Vec<Vec<u8>> = [
        js("js-a").at(T0, submit_job("job-a", 1, Some(pod(&[("cpu", "1")], None)), &[])),
        js("js-a").at(T0 + 1, submit_job("job-b", 1, Some(pod(&[("cpu", "2")], None)), &[])),
        js("js-a").at(T0 + 2, leased("job-a", "run-a", "cluster-1", "node-1", "default")),
        js("js-a").at(T0 + 3, leased("job-b", "run-b", "cluster-1", "node-2", "default")),
        js("js-a").at(T0 + 4, assigned("job-a", "run-a")).at(T0 + 5, running("job-a", "run-a", Some("node-1"))),
    ]
    .iter()
    .map(Seq::encode)
    .collect();
    // Partition 1: a job submitted before the stop, run after it.
    let before: Vec<Vec<u8>> = vec![js("js-b").at(T0, submit_job("job-c", 2, None, &[])).encode()];
    let after: Vec<Vec<u8>> = [
        js("js-b").at(T0 + 1, leased("job-c", "run-c", "cluster-2", "node-9", "default")),
        js("js-b").at(T0 + 2, assigned("job-c", "run-c")),
        js("js-b").at(T0 + 3, running("job-c", "run-c", Some("node-9"))),
        js("js-b").at(T0 + 4, run_succeeded("job-c", "run-c")),
        js("js-b").at(T0 + 5, job_succeeded("job-c")),
    ]
    .iter()
    .map(Seq::encode)
    .collect();

    // Hold job_run: the DB batch that creates the first run blocks inside its transaction.
    let mut blocker = PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN").await.unwrap();
    blocker.execute("LOCK TABLE job_run IN SHARE MODE").await.unwrap();

    let mut first = config(&db, &b, &name, &sub);
    first.batch_size = 2;
    first.batch_duration = Duration::from_secs(30);
    first.shutdown_timeout = Duration::from_secs(2);
    let app = start(first).await;

    let pulsar = client(&b).await;
    let mut p0 = producer(&pulsar, &topic, 0, true).await;
    let mut p1 = producer(&pulsar, &topic, 1, false).await;
    let ids = publish_entry(&mut p0, &entry).await;
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|i| (i.0, i.1) == (ids[0].0, ids[0].1)), "one entry: {ids:?}");
    assert_eq!(ids.iter().map(|i| i.2).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    publish_each(&mut p1, &before).await;

    let p0_topic = format!("{topic}-partition-0");
    let (ledger, entry_id) = (ids[0].0, ids[0].1);
    let mid = eventually("a commit in the middle of the entry", || {
        let (pool, p0_topic, sub) = (db.pool.clone(), p0_topic.clone(), sub.clone());
        async move {
            match committed_position(&pool, &sub, &p0_topic).await {
                Some((l, e, b)) if (l, e) == (ledger, entry_id) && b >= 0 => Some(b),
                _ => None,
            }
        }
    })
    .await;
    // Let the next DB batch reach the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = committed_position(&db.pool, &sub, &p0_topic).await;
    assert_eq!(still, Some((ledger, entry_id, mid)), "nothing past the lock commits");
    assert!(mid < 2, "the commit before the lock is a part of the entry (index {mid})");
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM job_run").await, 0);

    // Stop: the blocked batch cannot finish within shutdown_timeout and is abandoned (exit is still clean).
    let started = Instant::now();
    stop(app).await;
    let stop_took = started.elapsed();
    assert!(stop_took < Duration::from_secs(10), "stop took {stop_took:?}");
    blocker.execute("ROLLBACK").await.unwrap();
    drop(blocker);

    // The entry was not acknowledged: its messages are still in the backlog.
    assert!(backlog(&b, &topic, 0, &sub).await > 0, "a partly committed entry must not be acknowledged");
    assert_eq!(committed_position(&db.pool, &sub, &p0_topic).await, Some((ledger, entry_id, mid)));

    // More traffic on partition 1 while the service is down, then restart with ordinary settings.
    publish_each(&mut p1, &after).await;
    // Process-wide counter (the other test may add to it): read before the restart, compared as at least.
    let skipped0 = metric_sum(
        &lookout_ingester::metrics::install_once().unwrap().render(),
        "lookout_ingester_messages_skipped_total",
    );
    let app = start(config(&db, &b, &name, &sub)).await;
    let addr = app.http_addr();

    let mut all = entry.clone();
    all.extend(before.iter().cloned());
    all.extend(after.iter().cloned());
    let want = reference(&all, &config(&db, &b, &name, &sub)).await;
    assert_eq!((want.0.len(), want.1.len()), (3, 3));
    assert_rows_converge(&db.pool, &want).await;
    eventually("the entry's last message committed", || {
        let (pool, p0_topic, sub) = (db.pool.clone(), p0_topic.clone(), sub.clone());
        async move { (committed_position(&pool, &sub, &p0_topic).await == Some((ledger, entry_id, 4))).then_some(()) }
    })
    .await;
    eventually("backlog 0 on both partitions", || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (backlog(&b, &topic, 0, &sub).await == 0 && backlog(&b, &topic, 1, &sub).await == 0).then_some(()) }
    })
    .await;
    let text = get(addr, "/metrics").await.1;
    let skipped = metric_sum(&text, "lookout_ingester_messages_skipped_total") - skipped0;
    assert!(skipped >= (mid + 1) as f64, "the committed part of the entry was skipped on redelivery ({skipped})");
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 0);
    stop(app).await;
}

/// A non-partitioned topic (a single consumer, named by its short name in the configuration) unloaded several
/// times while entries are in flight. The writer is held (a lock on `job_run`) while the topic is unloaded, so the
/// broker delivers again everything not yet acknowledged, including messages already forwarded: those must be
/// dropped, and the service must still converge to exactly the reference rows, commit the last position and ack
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_unloads_lose_and_double_nothing() {
    init_logs();
    let b = broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-unload-{id}"), format!("li-unload-{id}"));
    let topic = create_topic(&b, &name).await;
    let db = TestDb::migrated().await;
    let mut cfg = config(&db, &b, &name, &sub);
    cfg.batch_size = 7;
    cfg.batch_duration = Duration::from_millis(50);

    let mut blocker = PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN").await.unwrap();
    blocker.execute("LOCK TABLE job_run IN SHARE MODE").await.unwrap();
    let dropped0 = metric_sum(
        &lookout_ingester::metrics::install_once().unwrap().render(),
        "lookout_ingester_redeliveries_dropped_total",
    );
    let app = start(cfg.clone()).await;

    const JOBS: usize = 30;
    let pulsar = client(&b).await;
    let mut p = topic_producer(&pulsar, &topic).await;
    let per_job: Vec<Vec<Vec<u8>>> = (0..JOBS).map(job_messages).collect();
    let mut all = Vec::new();
    let mut last = None;
    let steps = per_job.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..steps {
        // Each round in entries of up to 4 messages, with an unload after some rounds.
        let round: Vec<Vec<u8>> = per_job.iter().filter_map(|m| m.get(step).cloned()).collect();
        for chunk in round.chunks(4) {
            last = publish_entry(&mut p, chunk).await.last().copied();
        }
        all.extend(round);
        if step % 2 == 1 {
            unload(&b, &topic).await;
        }
    }
    // Once the consumer is back and has everything (forwarded or waiting in the pipeline, the writer stuck on the
    // lock), unload again: the broker redelivers every unacknowledged entry.
    eventually("the consumer reconnected", || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (topic_consumers(&b, &topic, &sub).await == 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    unload(&b, &topic).await;
    // Release the writer only once the consumer is back and the redelivery has arrived.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eventually("the consumer reconnected after the last unload", || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (topic_consumers(&b, &topic, &sub).await == 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocker.execute("ROLLBACK").await.unwrap();
    drop(blocker);

    let want = reference(&all, &cfg).await;
    assert_eq!((want.0.len(), want.1.len()), (JOBS, JOBS));
    assert_rows_converge(&db.pool, &want).await;
    let last = last.expect("published");
    eventually("the last position committed", || {
        let (pool, topic, sub) = (db.pool.clone(), topic.clone(), sub.clone());
        async move { (committed_position(&pool, &sub, &topic).await == Some(last)).then_some(()) }
    })
    .await;
    eventually("backlog 0", || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (topic_backlog(&b, &topic, &sub).await == 0).then_some(()) }
    })
    .await;
    let text = get(app.http_addr(), "/metrics").await.1;
    let dropped = metric_sum(&text, "lookout_ingester_redeliveries_dropped_total") - dropped0;
    assert!(dropped >= 1.0, "the unload while the writer was held must cause redeliveries that are dropped");
    eprintln!("{} messages; {dropped} redelivered messages dropped", all.len());
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 0);
    stop(app).await;
}

/// A job's submit in one partition and its later events (in their order) in the other, so the two are written by
/// different writer lanes, concurrently (the whole stream is published before the service starts). An event a lane
/// parks because the other lane has not committed its job yet must still be applied: the service converges to the
/// rows of the in-order apply path and nothing stays parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_spread_over_partitions_written_by_concurrent_lanes_converges() {
    init_logs();
    let b = broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-spread-{id}"), format!("li-spread-{id}"));
    let topic = create_partitioned_topic(&b, &name, 2).await;
    let db = TestDb::migrated().await;
    let cfg = config(&db, &b, &name, &sub);
    assert_eq!(cfg.writers, 2, "partitions 0 and 1 go to different lanes");

    const JOBS: usize = 200;
    let pulsar = client(&b).await;
    let mut producers = [producer(&pulsar, &topic, 0, true).await, producer(&pulsar, &topic, 1, true).await];
    let per_job: Vec<Vec<Vec<u8>>> = (0..JOBS).map(job_messages).collect();
    let mut all: Vec<Vec<u8>> = Vec::new();
    let steps = per_job.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..steps {
        // Job `i`'s submit goes to partition `i % 2`, its later steps to the other one.
        let mut round: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for (i, msgs) in per_job.iter().enumerate() {
            if let Some(m) = msgs.get(step) {
                round[(i + usize::from(step > 0)) % 2].push(m.clone());
            }
        }
        for (p, msgs) in producers.iter_mut().zip(&round) {
            publish_entry(p, msgs).await;
        }
        all.extend(round.into_iter().flatten());
    }

    let want = reference(&all, &cfg).await;
    let app = start(cfg.clone()).await;
    assert_rows_converge(&db.pool, &want).await;
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 0);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    stop(app).await;
}

/// Every codec a producer may use (Armada's use zlib; lz4, zstd and snappy are the others Pulsar offers): one
/// partition each, written as producer batches (compressed entries of several messages). All are consumed into the
/// rows of the apply path, nothing quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_compressed_with_each_codec_are_consumed() {
    init_logs();
    let b = broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-codecs-{id}"), format!("li-codecs-{id}"));
    let codecs = [
        Compression::Lz4(CompressionLz4::default()),
        Compression::Zlib(CompressionZlib::default()),
        Compression::Zstd(CompressionZstd::default()),
        Compression::Snappy(CompressionSnappy::default()),
    ];
    let topic = create_partitioned_topic(&b, &name, codecs.len() as u32).await;
    let db = TestDb::migrated().await;
    let cfg = config(&db, &b, &name, &sub);

    let pulsar = client(&b).await;
    let mut all: Vec<Vec<u8>> = Vec::new();
    for (partition, codec) in codecs.into_iter().enumerate() {
        let options = ProducerOptions { batch_size: Some(1000), compression: Some(codec), ..Default::default() };
        let mut p = pulsar
            .producer()
            .with_topic(format!("{topic}-partition-{partition}"))
            .with_options(options)
            .build()
            .await
            .expect("producer");
        // Three jobs per codec; each step of the three goes out as one compressed entry.
        let per_job: Vec<Vec<Vec<u8>>> = (0..3).map(|j| job_messages(100 * partition + j)).collect();
        for step in 0..per_job[0].len() {
            let entry: Vec<Vec<u8>> = per_job.iter().filter_map(|m| m.get(step).cloned()).collect();
            let ids = publish_entry(&mut p, &entry).await;
            assert!(ids.windows(2).all(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1)), "one entry: {ids:?}");
            all.extend(entry);
        }
    }

    let want = reference(&all, &cfg).await;
    assert_eq!(want.0.len(), 12);
    let app = start(cfg).await;
    assert_rows_converge(&db.pool, &want).await;
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    stop(app).await;
}
