//! The service end to end against a real Pulsar and a real Postgres: `startup::App` consuming a partitioned topic
//! that a real producer fills (zlib, producer batching), checked row by row against the `apply` path, through
//! `/metrics` and `/readyz`, the subscription backlog and the committed positions.
//!
//! Needs `DATABASE_URL` (a role that can create databases, see `tests/support/db.rs`), Pulsar at
//! `PULSAR_URL` (default `pulsar://127.0.0.1:6650`) and its admin API at `PULSAR_ADMIN_URL` (default
//! `http://127.0.0.1:8080`); `scripts/services.sh up` provides both. `LI_TEST_LOG=debug` shows the service's logs.
//!
//! (Redeliveries — an entry split across a stop, topic unloads: `service_redelivery.rs`.)

mod support;

use std::collections::HashMap;
use std::time::Instant;

use lookout_ingester::message::MessageId;
use pulsar::compression::{Compression, CompressionLz4, CompressionSnappy, CompressionZlib, CompressionZstd};
use support::app::{TestApp, config, init_logs, spawn_app, start, stop};
use support::broker::{build_producer, producer_options, shared_broker};
use support::db::TestDb;
use support::http::{eventually, metric};
use support::rows;
use support::service::*;
use support::snapshot::{positions, reference};

// ------------------------------------------------------------------------------------------------ tests

/// N jobs over a 2-partition topic; partition 0 is written by a batching zlib producer (entries of several
/// messages), partition 1 by a plain one. The service must converge to exactly the rows the apply path gives,
/// commit the last position of each partition, acknowledge everything (backlog 0), report it in /metrics, be
/// ready, and stop cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_a_partitioned_topic_end_to_end() {
    let TestApp { app, db, broker: b, topic, subscription: sub, config: cfg } = spawn_app("li-e2e", 2, |_| {}).await;
    let addr = app.http_addr();
    eventually("/readyz 200", WAIT, || async { (get(addr, "/readyz").await.0 == 200).then_some(()) }).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);

    const JOBS: usize = 24;
    let pulsar = b.client().await;
    let mut p0 = producer(&pulsar, &topic, 0, true).await;
    let mut p1 = producer(&pulsar, &topic, 1, false).await;
    let per_job: Vec<Vec<Vec<u8>>> = (0..JOBS).map(job_messages).collect();
    let mut all: Vec<Vec<u8>> = Vec::new();
    let mut last: HashMap<u32, MessageId> = HashMap::new();
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
        assert!(ids0.windows(2).all(|w| w[0].entry_id() == w[1].entry_id()), "a round is one entry: {ids0:?}");
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

    let want = reference(&all, &cfg, 7).await;
    assert_eq!((want.jobs.len(), want.runs.len()), (JOBS, JOBS));
    let pool = db.pool.clone();
    assert_rows_converge(&pool, &want).await;

    // The committed position of each partition is its last message, under the full partition topic name.
    for partition in [0u32, 1] {
        let expected = last[&partition];
        let topic_p = format!("{topic}-partition-{partition}");
        eventually("the last position committed", WAIT, || {
            let (pool, topic_p, sub) = (pool.clone(), topic_p.clone(), sub.clone());
            async move { (positions(&pool, &sub).await.get::<str>(&topic_p).copied() == Some(expected)).then_some(()) }
        })
        .await;
    }
    // Every entry acknowledged.
    eventually("backlog 0 on both partitions", WAIT, || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move {
            (b.backlog(&topic, 0, &sub).await == Some(0) && b.backlog(&topic, 1, &sub).await == Some(0)).then_some(())
        }
    })
    .await;
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 0);

    // Metrics (process-wide counters: another test may add to them, so at least).
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let n = messages as f64;
    assert!(metric(&text, "lookout_ingester_messages_consumed_total", "") >= n, "{text}");
    assert!(metric(&text, "lookout_ingester_events_consumed_total", "") >= n + JOBS as f64, "{text}");
    assert!(metric(&text, "lookout_ingester_rows_written_total", "") >= (2 * JOBS) as f64, "{text}");
    assert!(metric(&text, "armada_lookout_ingester_v2_pulsar_messages_processed", "") >= n, "{text}");
    assert!(metric(&text, "lookout_ingester_publish_to_commit_seconds_count", "") >= n, "{text}");
    assert!(text.contains("lookout_ingester_lag_seconds{partition=\""), "{text}");
    assert!(text.contains("lookout_ingester_zombie_jobs"), "{text}");
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));

    let started = Instant::now();
    stop(app).await;
    eprintln!("{messages} messages over 2 partitions; clean stop in {:?}", started.elapsed());
}

/// A job's submit in one partition and its later events (in their order) in the other, so the two are written by
/// different writer lanes, concurrently (the whole stream is published before the service starts). An event a lane
/// parks because the other lane has not committed its job yet must still be applied: the service converges to the
/// rows of the in-order apply path and nothing stays parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_spread_over_partitions_written_by_concurrent_lanes_converges() {
    init_logs();
    let b = shared_broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-spread-{id}"), format!("li-spread-{id}"));
    let topic = b.create_partitioned_topic(&name, 2).await;
    let db = TestDb::migrated().await;
    let cfg = config(&db, &b, &name, &sub);
    assert_eq!(cfg.writers, 2, "partitions 0 and 1 go to different lanes");

    const JOBS: usize = 200;
    let pulsar = b.client().await;
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

    let want = reference(&all, &cfg, 7).await;
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
    let b = shared_broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-codecs-{id}"), format!("li-codecs-{id}"));
    let codecs = [
        Compression::Lz4(CompressionLz4::default()),
        Compression::Zlib(CompressionZlib::default()),
        Compression::Zstd(CompressionZstd::default()),
        Compression::Snappy(CompressionSnappy::default()),
    ];
    let topic = b.create_partitioned_topic(&name, codecs.len() as u32).await;
    let db = TestDb::migrated().await;
    let cfg = config(&db, &b, &name, &sub);

    let pulsar = b.client().await;
    let mut all: Vec<Vec<u8>> = Vec::new();
    for (partition, codec) in codecs.into_iter().enumerate() {
        let options = producer_options(Some(1000), Some(codec));
        let mut p =
            build_producer(&pulsar, &format!("{topic}-partition-{partition}"), options).await.expect("producer");
        // Three jobs per codec; each step of the three goes out as one compressed entry.
        let per_job: Vec<Vec<Vec<u8>>> = (0..3).map(|j| job_messages(100 * partition + j)).collect();
        for step in 0..per_job[0].len() {
            let entry: Vec<Vec<u8>> = per_job.iter().filter_map(|m| m.get(step).cloned()).collect();
            let ids = publish_entry(&mut p, &entry).await;
            assert!(ids.windows(2).all(|w| w[0].entry_id() == w[1].entry_id()), "one entry: {ids:?}");
            all.extend(entry);
        }
    }

    let want = reference(&all, &cfg, 7).await;
    assert_eq!(want.jobs.len(), 12);
    let app = start(cfg).await;
    assert_rows_converge(&db.pool, &want).await;
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    stop(app).await;
}
