//! Faults of the services: Pulsar and Postgres restarted mid-stream, and a broker crash.
//!
//! Needs `DATABASE_URL`, `PULSAR_URL`, `PULSAR_ADMIN_URL` (`scripts/services.sh up`; see tests/service.rs). Tests that
//! stop, kill or restart services use a private Postgres + Pulsar pair started with `scripts/services.sh` (state in
//! /var/tmp/li-test-faults, ports 55461/6661/8061/3161), one test at a time; the shared pair is never restarted.
//! `LI_TEST_LOG=debug` shows the in-process service's logs; a child process's log is printed when its test fails.
//! Every test ends by comparing every table the ingester writes with what the `apply` path gives for the same
//! messages (`support::snapshot::reference`).

mod support;

use std::time::{Duration, Instant};

use lookout_ingester::config::Config;
use support::app::init_logs;
use support::broker::*;
use support::child::*;
use support::db::TestDb;
use support::faults::*;
use support::http::*;
use support::private::*;
use support::snapshot::*;
use support::stream::*;

// ------------------------------------------------------------------------------------------------ 2. restarts

/// Publishes `messages` in chunks with a pause between them (a live stream).
async fn trickle(b: Broker, topic: String, messages: Vec<Keyed>, chunk: usize, pause: Duration) {
    let mut producer = b.producer(&topic, true).await;
    for part in messages.chunks(chunk) {
        publish(&mut producer, part).await;
        tokio::time::sleep(pause).await;
    }
}

/// Polls `/readyz` until stopped; returns the non-200 answers.
fn readyz_watch(
    addr: std::net::SocketAddr,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<Vec<String>>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, body) = http("GET", &format!("http://{addr}/readyz"), None).await;
                if status != 200 {
                    seen.push(format!("{status} {}", body.trim()));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        }
    });
    (stop, handle)
}

/// Pulsar is restarted while the binary consumes a live stream, then Postgres is stopped and started again. The
/// service resumes by itself after each; while Postgres is down it reads no more than its bounded queues hold
/// (per writer lane three batches: the one being retried, one waiting, one being gathered) although far more is
/// published, and it acknowledges nothing (the broker's cursor and the acks counter stay where they were). The
/// tables end exactly as the reference. Uses the private Postgres + Pulsar pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulsar_and_postgres_restarts_mid_stream_resume_by_themselves() {
    init_logs();
    let _one_at_a_time = PRIVATE_SERVICES.lock().await;
    let started = Instant::now();
    let _stop_them = PrivateGuard;
    private("pg", "start").await;
    private("pulsar", "start").await;
    let b = private_broker();
    let id = short_id();
    let tag = &id[..6];
    let (name, sub) = (format!("li-restart-{id}"), format!("li-restart-{id}"));
    const PARTITIONS: u32 = 3;
    const BATCH: usize = 50;
    const WRITERS: usize = 2;
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    let db = ServerDb::create(&private_pg_url()).await;
    let messages = witnessed(interleave(stream(tag, 600, T0), doubling_witnesses(tag, 9)));
    let want = tokio::spawn({
        let payloads = payloads(&messages);
        async move { reference(&payloads, &Config::default(), 500).await }
    });
    let (p1, p2, p3) = {
        let n = messages.len();
        (messages[..n * 3 / 10].to_vec(), messages[n * 3 / 10..n * 6 / 10].to_vec(), messages[n * 6 / 10..].to_vec())
    };
    let yaml = format!(
        "batch_size: {BATCH}\nbatch_duration: 50ms\nwriters: {WRITERS}\nmax_backoff: 2\npulsar:\n  idle_rebuild_after: 10s\n  \
         rest_url: {}\n",
        b.admin
    );
    let mut child = Child::spawn(&child_spec("ingester", &db.url, &b, &topic, &sub, &yaml)).await;
    child.wait_ready(Duration::from_secs(60)).await;

    // Pulsar restarts (SIGTERM, 7 s of shutdown, start) while the first part is being consumed.
    let mut producer = b.producer(&topic, true).await;
    publish(&mut producer, &p1).await;
    drop(producer);
    let backlog: u64 = b.backlogs(&topic, PARTITIONS, &sub).await.unwrap().iter().sum();
    eprintln!("[faults] restarting Pulsar with a backlog of {backlog} entries");
    let (stop, watch) = readyz_watch(child.http);
    private("pulsar", "restart").await;
    trickle(b.clone(), topic.clone(), p2, 30, Duration::from_millis(50)).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, CATCH_UP).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let not_ready = watch.await.unwrap();
    assert!(not_ready.iter().any(|s| s.contains("pulsar")), "/readyz never said the consumer was down: {not_ready:?}");
    child.wait_ready(Duration::from_secs(30)).await;
    let text = child.metrics().await;
    eprintln!(
        "[faults] after the Pulsar restart: consumer rebuilds {}, by the idle watchdog {}",
        metric(&text, "lookout_ingester_consumer_rebuilds_total", ""),
        metric(&text, "lookout_ingester_consumer_rebuilds_total", "reason=\"idle_watchdog\"")
    );

    // Postgres goes down; the stream goes on.
    private("pg", "stop").await;
    eventually("/readyz 503 (postgres)", Duration::from_secs(30), || async {
        let (status, body) = child.get("/readyz").await;
        (status == 503 && body.contains("postgres")).then_some(())
    })
    .await;
    let text = child.metrics().await;
    let consumed0 = metric(&text, "lookout_ingester_messages_consumed_total", "");
    let acks0 = metric(&text, "lookout_ingester_acks_total", "");
    let mut cursors0 = Vec::new();
    for p in 0..PARTITIONS {
        cursors0.push(b.mark_delete(&topic, p, &sub).await);
    }
    let published = p3.len();
    trickle(b.clone(), topic.clone(), p3, 100, Duration::from_millis(20)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let text = child.metrics().await;
    let consumed = metric(&text, "lookout_ingester_messages_consumed_total", "") - consumed0;
    let acks = metric(&text, "lookout_ingester_acks_total", "") - acks0;
    let mut cursors = Vec::new();
    for p in 0..PARTITIONS {
        cursors.push(b.mark_delete(&topic, p, &sub).await);
    }
    eprintln!("[faults] Postgres down: {published} published, {consumed} read into the pipeline, {acks} acks");
    // Per writer lane: the batch being retried, one waiting, one being gathered (each at most BATCH messages).
    let bound = WRITERS * 3 * BATCH;
    assert!(published > 3 * bound, "publish far more than the queues hold");
    assert!(
        consumed > 0.0 && consumed <= bound as f64,
        "read {consumed} messages while Postgres was down (bound {bound})"
    );
    assert_eq!(acks, 0.0, "acknowledged while Postgres was down");
    assert_eq!(cursors, cursors0, "the broker's cursor moved while Postgres was down");
    private("pg", "start").await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, CATCH_UP).await;
    child.wait_ready(Duration::from_secs(30)).await;

    let got = Snapshot::read(&db.pool).await;
    assert_same(&got, &want.await.unwrap());
    child.sigterm();
    assert!(child.wait_exit(Duration::from_secs(30)).await.success());
    eprintln!("[faults] restarts: {} in {:?}", got.summary(), started.elapsed());
}

/// The broker is killed (kill -9) and started again while two instances consume, one a partitioned topic and one a
/// plain topic: `/readyz` says so meanwhile, the consumers are rebuilt, and both databases end exactly as the
/// reference with everything acknowledged. The watchdog (`idle_rebuild_after` 5 s here) rescues a partition that
/// stays silent with a backlog after the restart, or whose consumer the multi-topic consumer lost and does not
/// re-create (seen in about one run of five without it). Uses the private Pulsar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_and_restart_loses_and_doubles_nothing() {
    init_logs();
    let _one_at_a_time = PRIVATE_SERVICES.lock().await;
    let started = Instant::now();
    let _stop_them = PrivateGuard;
    private("pulsar", "start").await;
    let b = private_broker();
    let id = short_id();
    let tag = &id[..6];
    let (p_name, s_name, sub) = (format!("li-crash-p-{id}"), format!("li-crash-s-{id}"), format!("li-crash-{id}"));
    let partitioned = b.create_partitioned_topic(&p_name, 2).await;
    let plain = b.create_topic(&s_name).await;
    let (db_p, db_s) = (TestDb::migrated().await, TestDb::migrated().await);
    let messages = witnessed(interleave(stream(tag, 300, T0), doubling_witnesses(tag, 6)));
    let want = tokio::spawn({
        let payloads = payloads(&messages);
        async move { reference(&payloads, &Config::default(), 500).await }
    });
    let yaml = format!(
        "batch_size: 50\nbatch_duration: 50ms\nmax_backoff: 2\npulsar:\n  idle_rebuild_after: 5s\n  rest_url: {}\n",
        b.admin
    );
    let mut cp = Child::spawn(&child_spec("partitioned", &db_p.url, &b, &partitioned, &sub, &yaml)).await;
    let mut cs = Child::spawn(&child_spec("plain", &db_s.url, &b, &plain, &sub, &yaml)).await;
    cp.wait_ready(Duration::from_secs(60)).await;
    cs.wait_ready(Duration::from_secs(60)).await;

    let half = messages.len() / 2;
    let both = |part: Vec<Keyed>| {
        let (b, partitioned, plain) = (b.clone(), partitioned.clone(), plain.clone());
        async move {
            tokio::join!(
                trickle(b.clone(), partitioned, part.clone(), 40, Duration::from_millis(30)),
                trickle(b, plain, part, 40, Duration::from_millis(30))
            );
        }
    };
    both(messages[..half].to_vec()).await;
    eventually("rows in both databases before the crash", Duration::from_secs(60), || async {
        (support::rows::count(&db_p.pool, "SELECT count(*) FROM job_run").await > 0
            && support::rows::count(&db_s.pool, "SELECT count(*) FROM job_run").await > 0)
            .then_some(())
    })
    .await;

    private("pulsar", "kill").await;
    for child in [&cp, &cs] {
        eventually("/readyz 503 while the broker is down", Duration::from_secs(30), || async {
            (child.get("/readyz").await.0 == 503).then_some(())
        })
        .await;
    }
    private("pulsar", "start").await;
    both(messages[half..].to_vec()).await;

    b.wait_backlog_zero(&partitioned, 2, &sub, CATCH_UP).await;
    eventually("backlog 0 on the plain topic", CATCH_UP, || async {
        (b.topic_backlog(&plain, &sub).await == Some(0)).then_some(())
    })
    .await;
    let want = want.await.unwrap();
    assert_same(&Snapshot::read(&db_p.pool).await, &want);
    assert_same(&Snapshot::read(&db_s.pool).await, &want);
    for child in [&cp, &cs] {
        child.wait_ready(Duration::from_secs(30)).await;
        let text = child.metrics().await;
        let rebuilt = metric(&text, "lookout_ingester_consumer_rebuilds_total", "");
        let rescued = metric(&text, "lookout_ingester_consumer_rebuilds_total", "reason=\"idle_watchdog\"")
            + metric(&text, "lookout_ingester_consumer_rebuilds_total", "reason=\"partition_consumer_lost\"");
        let dropped = metric(&text, "lookout_ingester_redeliveries_dropped_total", "");
        eprintln!(
            "[faults] {}: consumer rebuilds {rebuilt}, by the watchdog {rescued}; redeliveries dropped {dropped}",
            child.name
        );
    }
    let rebuilt = metric(&cs.metrics().await, "lookout_ingester_consumer_rebuilds_total", "");
    assert!(rebuilt >= 1.0, "the plain topic's consumer must have been rebuilt");
    for child in [&mut cp, &mut cs] {
        child.sigterm();
        assert!(child.wait_exit(Duration::from_secs(30)).await.success());
    }
    eprintln!("[faults] broker crash: {} in {:?}", want.summary(), started.elapsed());
}
