//! Two instances on one Failover subscription (one killed), and the idle watchdog.
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
use support::snapshot::*;
use support::stream::*;

// ------------------------------------------------------------------------------------------------ 4. two instances

/// Two instances of the binary share one Failover subscription of a 4-partition topic: every partition has both
/// as consumers and exactly one of them active, and each instance is active on some. While one instance cannot
/// commit (its partitions' position rows are locked), the other's idle watchdog sees those partitions silent with
/// a backlog and leaves them alone (they have another active consumer). Then one instance is killed (SIGKILL) in
/// the middle of the stream: the other becomes active on all four partitions and the tables end exactly as the
/// reference, with the backlog 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_one_takes_over_when_the_other_is_killed() {
    use sqlx::Executor;
    init_logs();
    let started = Instant::now();
    let b = shared_broker();
    let id = short_id();
    let tag = &id[..6];
    let (name, sub) = (format!("li-two-{id}"), format!("li-two-{id}"));
    const PARTITIONS: u32 = 4;
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    let db = TestDb::migrated().await;
    let messages = witnessed(interleave(stream(tag, 420, T0), doubling_witnesses(tag, 9)));
    let want = tokio::spawn({
        let payloads = payloads(&messages);
        async move { reference(&payloads, &Config::default(), 500).await }
    });
    let (name_a, name_b) = (format!("faults-a-{id}"), format!("faults-b-{id}"));
    let spec = |consumer: &str| {
        let yaml = format!(
            "batch_size: 60\nbatch_duration: 50ms\nmax_backoff: 2\npulsar:\n  consumer_name: {consumer}\n  \
             idle_rebuild_after: 2s\n  rest_url: {}\n",
            b.admin
        );
        let mut spec = child_spec(consumer, &db.url, &b, &topic, &sub, &yaml);
        spec.log_level = "info,lookout_ingester::source=debug".into();
        spec
    };
    let mut a = Child::spawn(&spec(&name_a)).await;
    let bb = Child::spawn(&spec(&name_b)).await;
    a.wait_ready(Duration::from_secs(60)).await;
    bb.wait_ready(Duration::from_secs(60)).await;

    // Each partition: both consumers, exactly one active; each instance active on some.
    let owners = eventually("both consumers on every partition", Duration::from_secs(60), || async {
        let seen = b.active_consumers(&topic, PARTITIONS, &sub).await;
        seen.iter().all(|(active, n)| *n == 2 && active.is_some()).then_some(seen)
    })
    .await;
    let owned_by =
        |who: &str| -> Vec<u32> { (0..PARTITIONS).filter(|p| owners[*p as usize].0.as_deref() == Some(who)).collect() };
    let (of_a, of_b) = (owned_by(&name_a), owned_by(&name_b));
    eprintln!("[faults] active on partitions: {name_a} {of_a:?}, {name_b} {of_b:?}");
    assert!(!of_a.is_empty() && !of_b.is_empty() && of_a.len() + of_b.len() == PARTITIONS as usize, "{owners:?}");

    // A cannot commit: its partitions' position rows are locked.
    let part = |p: u32| format!("{topic}-partition-{p}");
    for p in 0..PARTITIONS {
        sqlx::query(
            "INSERT INTO lookout_ingester.consumer_position (subscription, topic, ledger_id, entry_id, batch_index)
             VALUES ($1, $2, -1, -1, -1)",
        )
        .bind(&sub)
        .bind(part(p))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let mut blocker = db.connect().await;
    blocker.execute("BEGIN").await.unwrap();
    sqlx::query(
        "SELECT 1 FROM lookout_ingester.consumer_position WHERE subscription = $1 AND topic = ANY($2) FOR UPDATE",
    )
    .bind(&sub)
    .bind(of_a.iter().map(|p| part(*p)).collect::<Vec<_>>())
    .execute(&mut blocker)
    .await
    .unwrap();
    let thirds = messages.len() / 3;
    let mut producer = b.producer(&topic, true).await;
    publish(&mut producer, &messages[..thirds]).await;
    eventually("B's partitions drained while A's are held", CATCH_UP, || async {
        let backlog = b.backlogs(&topic, PARTITIONS, &sub).await?;
        (of_b.iter().all(|p| backlog[*p as usize] == 0) && of_a.iter().all(|p| backlog[*p as usize] > 0)).then_some(())
    })
    .await;
    // Three watchdog periods with A's partitions silent at B and a backlog on them.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let backlog = b.backlogs(&topic, PARTITIONS, &sub).await.unwrap();
    assert!(of_a.iter().all(|p| backlog[*p as usize] > 0), "A's partitions keep their backlog: {backlog:?}");
    for child in [&a, &bb] {
        let rebuilt = metric(&child.metrics().await, "lookout_ingester_consumer_rebuilds_total", "");
        assert_eq!(rebuilt, 0.0, "{} rebuilt its consumer", child.name);
    }
    let looked = bb.log_count("silent partition is consumed by another consumer");
    assert!(looked >= 1, "B's watchdog never looked at A's silent partitions");
    assert!(metric(&a.metrics().await, "lookout_ingester_messages_consumed_total", "") > 0.0);
    blocker.execute("ROLLBACK").await.unwrap();
    drop(blocker);

    // A is killed while the second third is consumed.
    let second = messages[thirds..2 * thirds].to_vec();
    let publishing = tokio::spawn(async move {
        for chunk in second.chunks(40) {
            publish(&mut producer, chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        producer
    });
    let before = positions(&db.pool, &sub).await;
    eventually("A commits again", Duration::from_secs(60), || async {
        let now = positions(&db.pool, &sub).await;
        of_a.iter().any(|p| now.get(&part(*p)) != before.get(&part(*p))).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9().await;
    let mut producer = publishing.await.unwrap();
    eventually("B active on every partition", Duration::from_secs(60), || async {
        let seen = b.active_consumers(&topic, PARTITIONS, &sub).await;
        seen.iter().all(|(active, n)| *n == 1 && active.as_deref() == Some(name_b.as_str())).then_some(())
    })
    .await;
    publish(&mut producer, &messages[2 * thirds..]).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, CATCH_UP).await;
    let got = Snapshot::read(&db.pool).await;
    assert_same(&got, &want.await.unwrap());
    let mut bb = bb;
    bb.sigterm();
    assert!(bb.wait_exit(Duration::from_secs(15)).await.success());
    eprintln!("[faults] two instances: {} in {:?}", got.summary(), started.elapsed());
}

// ------------------------------------------------------------------------------------------------ the watchdog

/// The idle watchdog rebuilds a consumer that is the active consumer of a partition which delivers nothing while
/// the broker holds a backlog for it. Provoked with the broker's subscription dispatch throttle (one message per
/// hour): after the first message the partition is silent with a backlog, the admin API names this consumer as
/// active, and within a few idle periods (2 s here) the consumer is rebuilt. Lifting the throttle, everything
/// arrives and the tables equal the reference. The process runs on one thread (`worker_threads: 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_watchdog_rebuilds_a_silent_partition_it_is_active_on() {
    init_logs();
    let b = shared_broker();
    let id = short_id();
    let (name, sub) = (format!("li-watchdog-{id}"), format!("li-watchdog-{id}"));
    let topic = b.create_partitioned_topic(&name, 1).await;
    let policy = format!("{}/admin/v2/persistent/public/default/{name}/subscriptionDispatchRate", b.admin);
    let throttle = r#"{"dispatchThrottlingRateInMsg": 1, "dispatchThrottlingRateInByte": -1, "ratePeriodInSecond": 3600,
                      "relativeToPublishRate": false}"#;
    let (status, body) = http("POST", &policy, Some(throttle)).await;
    assert_eq!(status, 204, "throttle: {body}");
    eventually("the throttle in force", Duration::from_secs(30), || async {
        let (status, body) = http("GET", &policy, None).await;
        (status == 200 && body.contains("3600")).then_some(())
    })
    .await;
    let db = TestDb::migrated().await;
    let messages = stream(&id[..6], 12, T0);
    let yaml = format!(
        "batch_size: 10\nbatch_duration: 50ms\nmax_backoff: 2\nworker_threads: 1\npulsar:\n  \
         consumer_name: watchdog-{id}\n  idle_rebuild_after: 2s\n  rest_url: {}\n",
        b.admin
    );
    let mut child = Child::spawn(&child_spec("ingester", &db.url, &b, &topic, &sub, &yaml)).await;
    child.wait_ready(Duration::from_secs(60)).await;
    let mut producer = b.producer(&topic, false).await;
    publish(&mut producer, &messages).await;
    let rescued = eventually("a rebuild by the idle watchdog", Duration::from_secs(60), || async {
        let n = metric(&child.metrics().await, "lookout_ingester_consumer_rebuilds_total", "reason=\"idle_watchdog\"");
        (n >= 1.0).then_some(n)
    })
    .await;
    let backlog = b.backlogs(&topic, 1, &sub).await.unwrap()[0];
    assert!(backlog > 0, "the throttle held messages back");
    assert!(child.log_count("partition delivers nothing to its active consumer (us)") >= 1);

    let (status, body) = http("DELETE", &policy, None).await;
    assert_eq!(status, 204, "lift the throttle: {body}");
    b.wait_backlog_zero(&topic, 1, &sub, CATCH_UP).await;
    let want = reference(&payloads(&messages), &Config::default(), 500).await;
    assert_same(&Snapshot::read(&db.pool).await, &want);
    child.sigterm();
    assert!(child.wait_exit(Duration::from_secs(30)).await.success());
    eprintln!("[faults] watchdog: {rescued} rebuild(s) while throttled (backlog {backlog})");
}
