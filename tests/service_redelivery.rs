//! The service and redeliveries, against a real Pulsar and Postgres: an entry split across batches and a stop
//! between them, and topic unloads; nothing is lost and nothing applied twice.

mod support;

use std::time::{Duration, Instant};

use lookout_ingester::message::MessageId;
use sqlx::{Connection, Executor, PgConnection};
use support::app::{config, init_logs, start, stop};
use support::broker::{build_producer, producer_options, shared_broker, zlib};
use support::db::TestDb;
use support::events::*;
use support::http::{eventually, metric};
use support::rows;
use support::service::*;
use support::snapshot::{positions, reference};

/// One producer batch (an entry of 5 messages) is split across DB batches (batch_size 2), and the process stops
/// after the first part committed while the next is blocked in Postgres. The entry must not be acknowledged; after
/// a restart it is delivered again whole, the committed part is skipped, the rest applied: the final rows equal
/// the reference and the position ends at the entry's last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_split_across_batches_survives_a_stop_between_them() {
    init_logs();
    let b = shared_broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-split-{id}"), format!("li-split-{id}"));
    let topic = b.create_partitioned_topic(&name, 2).await;
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

    let pulsar = b.client().await;
    let mut p0 = producer(&pulsar, &topic, 0, true).await;
    let mut p1 = producer(&pulsar, &topic, 1, false).await;
    let ids = publish_entry(&mut p0, &entry).await;
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|i| i.entry_id() == ids[0].entry_id()), "one entry: {ids:?}");
    assert_eq!(ids.iter().map(|i| i.batch_index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    publish_each(&mut p1, &before).await;

    let p0_topic = format!("{topic}-partition-0");
    let first = ids[0];
    let mid = eventually("a commit in the middle of the entry", WAIT, || {
        let (pool, p0_topic, sub) = (db.pool.clone(), p0_topic.clone(), sub.clone());
        async move {
            match positions(&pool, &sub).await.get::<str>(&p0_topic).copied() {
                Some(at) if at.entry_id() == first.entry_id() && at.batch_index >= 0 => Some(at.batch_index),
                _ => None,
            }
        }
    })
    .await;
    // Let the next DB batch reach the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = positions(&db.pool, &sub).await.get::<str>(&p0_topic).copied();
    assert_eq!(still, Some(MessageId { batch_index: mid, ..first }), "nothing past the lock commits");
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
    assert!(b.backlog(&topic, 0, &sub).await.unwrap_or(0) > 0, "a partly committed entry must not be acknowledged");
    assert_eq!(
        positions(&db.pool, &sub).await.get::<str>(&p0_topic).copied(),
        Some(MessageId { batch_index: mid, ..first })
    );

    // More traffic on partition 1 while the service is down, then restart with ordinary settings.
    publish_each(&mut p1, &after).await;
    // Process-wide counter (the other test may add to it): read before the restart, compared as at least.
    let skipped0 = metric(
        &lookout_ingester::metrics::install_once().unwrap().render(),
        "lookout_ingester_messages_skipped_total",
        "",
    );
    let app = start(config(&db, &b, &name, &sub)).await;
    let addr = app.http_addr();

    let mut all = entry.clone();
    all.extend(before.iter().cloned());
    all.extend(after.iter().cloned());
    let want = reference(&all, &config(&db, &b, &name, &sub), 7).await;
    assert_eq!((want.jobs.len(), want.runs.len()), (3, 3));
    assert_rows_converge(&db.pool, &want).await;
    eventually("the entry's last message committed", WAIT, || {
        let (pool, p0_topic, sub) = (db.pool.clone(), p0_topic.clone(), sub.clone());
        async move {
            (positions(&pool, &sub).await.get::<str>(&p0_topic).copied() == Some(MessageId { batch_index: 4, ..first }))
                .then_some(())
        }
    })
    .await;
    eventually("backlog 0 on both partitions", WAIT, || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move {
            (b.backlog(&topic, 0, &sub).await == Some(0) && b.backlog(&topic, 1, &sub).await == Some(0)).then_some(())
        }
    })
    .await;
    let text = get(addr, "/metrics").await.1;
    let skipped = metric(&text, "lookout_ingester_messages_skipped_total", "") - skipped0;
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
    let b = shared_broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-unload-{id}"), format!("li-unload-{id}"));
    let topic = b.create_topic(&name).await;
    let db = TestDb::migrated().await;
    let mut cfg = config(&db, &b, &name, &sub);
    cfg.batch_size = 7;
    cfg.batch_duration = Duration::from_millis(50);

    let mut blocker = PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN").await.unwrap();
    blocker.execute("LOCK TABLE job_run IN SHARE MODE").await.unwrap();
    let dropped0 = metric(
        &lookout_ingester::metrics::install_once().unwrap().render(),
        "lookout_ingester_redeliveries_dropped_total",
        "",
    );
    let app = start(cfg.clone()).await;

    const JOBS: usize = 30;
    let pulsar = b.client().await;
    let mut p = build_producer(&pulsar, &topic, producer_options(Some(1000), Some(zlib()))).await.expect("producer");
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
            b.unload(&topic).await;
        }
    }
    // Once the consumer is back and the broker has dispatched everything to it (forwarded or waiting in the
    // pipeline, the writer stuck on the lock), unload again: the broker redelivers every unacknowledged entry, and
    // those were all forwarded already. Waiting for the reconnection alone raced the broker: it dispatches to a new
    // Failover consumer only after its failover delay (1 s), and an unload just before that redelivers nothing.
    eventually("every entry dispatched to the reconnected consumer", WAIT, || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (b.topic_consumers(&topic, &sub).await == 1 && b.all_dispatched(&topic, &sub).await).then_some(()) }
    })
    .await;
    b.unload(&topic).await;
    // Release the writer only once the redelivery has arrived (the consumer's reconnect backs off after repeated
    // unloads, so no fixed wait): wait for the dropped redeliveries themselves.
    eventually("redelivered messages dropped while the writer is held", WAIT, || async {
        let text = get(app.http_addr(), "/metrics").await.1;
        (metric(&text, "lookout_ingester_redeliveries_dropped_total", "") > dropped0).then_some(())
    })
    .await;
    blocker.execute("ROLLBACK").await.unwrap();
    drop(blocker);

    let want = reference(&all, &cfg, 7).await;
    assert_eq!((want.jobs.len(), want.runs.len()), (JOBS, JOBS));
    assert_rows_converge(&db.pool, &want).await;
    let last = last.expect("published");
    eventually("the last position committed", WAIT, || {
        let (pool, topic, sub) = (db.pool.clone(), topic.clone(), sub.clone());
        async move { (positions(&pool, &sub).await.get::<str>(&topic).copied() == Some(last)).then_some(()) }
    })
    .await;
    eventually("backlog 0", WAIT, || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (b.topic_backlog(&topic, &sub).await == Some(0)).then_some(()) }
    })
    .await;
    let text = get(app.http_addr(), "/metrics").await.1;
    let dropped = metric(&text, "lookout_ingester_redeliveries_dropped_total", "") - dropped0;
    assert!(dropped >= 1.0, "the unload while the writer was held must cause redeliveries that are dropped");
    eprintln!("{} messages; {dropped} redelivered messages dropped", all.len());
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await, 0);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 0);
    stop(app).await;
}

/// A range of the topic skipped on the subscription by an operator (Pulsar's admin `skip`) while the service was
/// down: after the restart the broker delivers from past it, so the messages do not continue the committed position.
/// The service holds them back and has the partition delivered again (a consumer rebuild); delivery restarts at
/// the same place, so after `gap_accept_after` the gap is accepted, logged and counted, and the rest is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_skipped_on_the_subscription_is_held_back_then_accepted() {
    init_logs();
    let b = shared_broker();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (name, sub) = (format!("li-skip-{id}"), format!("li-skip-{id}"));
    let topic = b.create_topic(&name).await;
    let db = TestDb::migrated().await;
    let mut cfg = config(&db, &b, &name, &sub);
    cfg.gap_accept_after = Duration::from_secs(3);
    let pulsar = b.client().await;
    let mut p = build_producer(&pulsar, &topic, producer_options(None, None)).await.expect("producer");

    let before: Vec<Vec<u8>> = (0..3).flat_map(job_messages).collect();
    let skipped = job_messages(3);
    let after: Vec<Vec<u8>> = (4..6).flat_map(job_messages).collect();
    let last = publish_each(&mut p, &before).await.last().copied();
    let app = start(cfg.clone()).await;
    eventually("the first jobs committed and acknowledged", WAIT, || {
        let (b, pool, topic, sub) = (b.clone(), db.pool.clone(), topic.clone(), sub.clone());
        async move {
            let at = positions(&pool, &sub).await.get::<str>(&topic).copied();
            (at == last && b.topic_backlog(&topic, &sub).await == Some(0)).then_some(())
        }
    })
    .await;
    stop(app).await;

    publish_each(&mut p, &skipped).await;
    publish_each(&mut p, &after).await;
    let url =
        format!("{}/admin/v2/persistent/public/default/{name}/subscription/{sub}/skip/{}", b.admin, skipped.len());
    let (status, body) = support::http::http("POST", &url, None).await;
    assert_eq!(status, 204, "skip: {body}");

    let counter = |text: &str, labels: &str| metric(text, "lookout_ingester_delivery_gaps_total", labels);
    let render = || lookout_ingester::metrics::install_once().unwrap().render();
    let (held0, accepted0) = (counter(&render(), "outcome=\"held\""), counter(&render(), "outcome=\"accepted\""));
    let rebuilds0 = metric(&render(), "lookout_ingester_consumer_rebuilds_total", "reason=\"delivery_gap\"");
    let app = start(cfg).await;
    let mut delivered = before.clone();
    delivered.extend(after.iter().cloned());
    let want = reference(&delivered, &config(&db, &b, &name, &sub), 7).await;
    assert_eq!(want.jobs.len(), 5);
    assert_rows_converge(&db.pool, &want).await;
    eventually("backlog 0", WAIT, || {
        let (b, topic, sub) = (b.clone(), topic.clone(), sub.clone());
        async move { (b.topic_backlog(&topic, &sub).await == Some(0)).then_some(()) }
    })
    .await;
    let text = render();
    assert!(counter(&text, "outcome=\"held\"") > held0, "the gap was held back first");
    assert!(counter(&text, "outcome=\"accepted\"") > accepted0, "then accepted");
    let rebuilds = metric(&text, "lookout_ingester_consumer_rebuilds_total", "reason=\"delivery_gap\"") - rebuilds0;
    assert!(rebuilds >= 1.0, "the partition was delivered again ({rebuilds} rebuilds)");
    stop(app).await;
}
