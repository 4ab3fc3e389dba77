//! Faults of the process: the real binary killed (SIGKILL) at random moments, and SIGTERM during a large batch.
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
use rand::{Rng, SeedableRng};
use sqlx::{Connection, Executor, PgConnection};
use support::app::init_logs;
use support::broker::*;
use support::child::*;
use support::db::TestDb;
use support::events::*;
use support::faults::*;
use support::http::*;
use support::snapshot::*;
use support::stream::*;

// ------------------------------------------------------------------------------------------------ 1. kill -9

/// The real binary is killed with SIGKILL at random moments, at least 10 times, while a stream of thousands of
/// events (4 partitions, zlib, producer batches of up to 100 messages) flows; each time it is started again. The
/// batches are small (40 events), so kills land between and inside transactions and between a commit and its ack.
/// At the end every table equals the reference — nothing lost, nothing doubled (every message carries a value that
/// is sanitized, and some are quarantined: applied twice, a message would leave two rows) — and the backlog is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    init_logs();
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let b = shared_broker();
    let id = short_id();
    let (name, sub) = (format!("li-kill9-{id}"), format!("li-kill9-{id}"));
    const PARTITIONS: u32 = 4;
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    let db = TestDb::migrated().await;

    let messages = witnessed(interleave(stream(&id[..6], 700, T0), doubling_witnesses(&id[..6], 12)));
    let events: usize = messages.len() + 700; // one message in the job's life holds two events
    eprintln!("[faults] {} messages, ~{events} events", messages.len());
    let want = tokio::spawn({
        let payloads = payloads(&messages);
        async move { reference(&payloads, &Config::default(), 500).await }
    });

    let spec = child_spec(
        "ingester",
        &db.url,
        &b,
        &topic,
        &sub,
        "batch_size: 40\nbatch_duration: 30ms\nmax_backoff: 2\nshutdown_timeout: 10s\n",
    );
    // The stream is published in small chunks while the process is killed and restarted. Its pace follows the
    // kills made while something was unacknowledged ("in flight"): a chunk every 100 ms while they keep up with the
    // stream (IN_FLIGHT over its length), one a second while they lag, so it never stalls and lasts long enough.
    const IN_FLIGHT: usize = 12;
    let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunks: Vec<Vec<Keyed>> = messages.chunks(25).map(<[Keyed]>::to_vec).collect();
    let publisher = tokio::spawn({
        let (b, topic, in_flight) = (b.clone(), topic.clone(), in_flight.clone());
        async move {
            let mut producer = b.producer(&topic, true).await;
            let n = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                publish(&mut producer, &chunk).await;
                let lagging = in_flight.load(std::sync::atomic::Ordering::SeqCst) * n < (i + 1) * IN_FLIGHT;
                tokio::time::sleep(Duration::from_millis(if lagging { 1000 } else { 100 })).await;
            }
        }
    });
    let mut kills = 0;
    while !publisher.is_finished() {
        let mut child = Child::spawn(&spec).await;
        if rng.random_bool(0.2) {
            // Sometimes right at start (subscribing, first batch).
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
        } else {
            // Otherwise somewhere while it commits.
            let before = positions(&db.pool, &sub).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            while positions(&db.pool, &sub).await == before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        }
        // Preferably while something is not yet acknowledged.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut backlog: u64 = 0;
        while Instant::now() < deadline {
            backlog = b.backlogs(&topic, PARTITIONS, &sub).await.unwrap_or_default().iter().sum();
            if backlog > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill9().await;
        kills += 1;
        if backlog > 0 {
            in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let jobs = support::rows::count(&db.pool, "SELECT count(*) FROM job").await;
        eprintln!("[faults] kill {kills}: {jobs} jobs stored, backlog {backlog} entries at the kill");
        assert!(kills < 60, "the stream does not end");
    }
    publisher.await.unwrap();
    let in_flight = in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!(in_flight >= 10, "only {in_flight} of {kills} kills happened with messages not yet acknowledged");

    // The last run goes to the end of the stream.
    let mut child = Child::spawn(&spec).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, CATCH_UP).await;
    let want = want.await.unwrap();
    let got = Snapshot::read(&db.pool).await;
    assert_same(&got, &want);
    assert_eq!(got.jobs.len(), 700 + 8, "{}", got.summary());
    child.sigterm();
    let status = child.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert_eq!(b.backlogs(&topic, PARTITIONS, &sub).await, Some(vec![0; PARTITIONS as usize]));
    eprintln!("[faults] {kills} kills ({in_flight} with work in flight); {} in {:?}", got.summary(), started.elapsed());
}

// ------------------------------------------------------------------------------------------------ 5. SIGTERM

/// Messages of `jobs` jobs' whole lives, 5 jobs (25 events) per message, as Armada compacts a job set's events.
fn compacted(tag: &str, jobs: usize) -> Vec<Keyed> {
    (0..jobs.div_ceil(5))
        .map(|m| {
            let jobset = format!("set-{}", m % 8);
            let mut s = seq("batch", &jobset);
            for i in m * 5..((m + 1) * 5).min(jobs) {
                let (job, run) = (format!("{tag}c{i:07}"), format!("{tag}-cr-{i:07}"));
                let t = T0 + i as i64;
                s = s
                    .at(t, submit_job(&job, 1, Some(pod(&[("cpu", "1"), ("memory", "1Gi")], None)), &[("k", "v")]))
                    .at(t + 1, leased(&job, &run, "cluster-a", "node-1", "default"))
                    .at(t + 2, running(&job, &run, Some("node-1")))
                    .at(t + 3, run_succeeded(&job, &run))
                    .at(t + 4, job_succeeded(&job));
            }
            (jobset, s.encode())
        })
        .collect()
}

/// SIGTERM while a large batch (8 000 events) is being stored: the process stores the batch in flight (and what
/// the batcher still holds), acknowledges what committed, and exits 0 within `shutdown_timeout`; the committed
/// positions moved past what was committed when the signal came, and the broker's cursor is exactly at the
/// committed positions (the acks went out before the exit). Restarted, it finishes the stream: the tables equal the
/// reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_large_batch_commits_it_acks_it_and_exits_0() {
    init_logs();
    let started = Instant::now();
    let b = shared_broker();
    let id = short_id();
    let tag = &id[..6];
    let (name, sub) = (format!("li-term-{id}"), format!("li-term-{id}"));
    const PARTITIONS: u32 = 2;
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    let db = TestDb::migrated().await;
    let messages = compacted(tag, 6000); // 1 200 messages, 30 000 events
    let want = tokio::spawn({
        let payloads = payloads(&messages);
        async move { reference(&payloads, &Config::default(), 10_000).await }
    });
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(40);
    let yaml = format!("batch_size: 8000\nbatch_duration: 5s\nshutdown_timeout: {}s\n", SHUTDOWN_TIMEOUT.as_secs());
    let spec = child_spec("ingester", &db.url, &b, &topic, &sub, &yaml);
    let mut child = Child::spawn(&spec).await;
    child.wait_ready(Duration::from_secs(60)).await;
    // Hold job_run: the first batch that writes runs waits inside its transaction, so a batch is surely in flight
    // when the signal comes (unheld, a writer faster than the looks below can commit everything between two of them).
    let mut blocker = PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN").await.unwrap();
    blocker.execute("LOCK TABLE job_run IN SHARE MODE").await.unwrap();
    // Unbatched, so that every message is its own entry and the cursor can be compared with the positions.
    let mut producer = b.producer(&topic, false).await;
    publish(&mut producer, &messages).await;

    // Wait until the writer is inside a batch's transaction that has written rows, and read the committed positions
    // while that transaction is still open (it is the same one before and after the read), then SIGTERM: its
    // commit comes after `at_signal` was read (under load the transaction first seen could otherwise be the last
    // one, committed before the read, leaving nothing in flight).
    let (db_name, pool) = (db.name.clone(), db.pool.clone());
    let at_signal = eventually("a batch being stored", Duration::from_secs(60), || async {
        let writing: Option<String> = sqlx::query_scalar(
            "SELECT a.backend_xid::text FROM pg_stat_activity a
             WHERE a.datname = $1 AND a.application_name = 'lookout-ingester' AND a.backend_xid IS NOT NULL
               -- a batch's transaction: it has locked its partitions' positions
               AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid
                             AND l.relation = 'lookout_ingester.consumer_position'::regclass)
             LIMIT 1",
        )
        .bind(&db_name)
        .fetch_optional(&pool)
        .await
        .unwrap();
        let xid = writing?;
        let at = positions(&pool, &sub).await;
        let still_open: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_xid::text = $1)")
                .bind(&xid)
                .fetch_one(&pool)
                .await
                .unwrap();
        still_open.then_some(at)
    })
    .await;
    let signalled = Instant::now();
    child.sigterm();
    // The signal lands while the batch waits; then the batch may finish, within the drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.execute("ROLLBACK").await.unwrap();
    drop(blocker);
    let status = child.wait_exit(SHUTDOWN_TIMEOUT + Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    eprintln!("[faults] SIGTERM → exit {status} in {took:?}");
    assert!(status.success(), "exit status after SIGTERM: {status}\n{}", child.log_tail(30));
    assert!(took < SHUTDOWN_TIMEOUT, "the drain took {took:?}");
    assert_eq!(child.log_count("shutdown timeout"), 0, "the drain hit shutdown_timeout:\n{}", child.log_tail(30));
    let after = positions(&db.pool, &sub).await;
    assert!(
        after != at_signal && after.iter().all(|(t, p)| at_signal.get(t).is_none_or(|s| p >= s)),
        "the batch in flight was committed: {at_signal:?} → {after:?}"
    );
    for p in 0..PARTITIONS {
        let cursor = b.mark_delete(&topic, p, &sub).await;
        match after.get(&format!("{topic}-partition-{p}")) {
            Some(at) => assert_eq!(cursor, Some(at.entry_id()), "partition {p}: cursor = committed position"),
            // Nothing committed there yet: nothing acknowledged (the cursor is before the first entry).
            None => {
                assert!(cursor.is_some_and(|(_, e)| e == -1), "partition {p}: nothing committed, cursor {cursor:?}")
            }
        }
    }
    let backlog: u64 = b.backlogs(&topic, PARTITIONS, &sub).await.unwrap().iter().sum();
    eprintln!("[faults] after the stop: positions {after:?}, backlog {backlog}");

    // Restarted, it finishes the stream.
    let mut child = Child::spawn(&spec).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, CATCH_UP).await;
    let got = Snapshot::read(&db.pool).await;
    assert_same(&got, &want.await.unwrap());
    assert_eq!(got.jobs.len(), 6000);
    child.sigterm();
    assert!(child.wait_exit(Duration::from_secs(30)).await.success());
    eprintln!("[faults] SIGTERM test: {} in {:?}", got.summary(), started.elapsed());
}
