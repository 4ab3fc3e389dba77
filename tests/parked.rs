//! Parked events are never stranded: an event parked because its job or run did not exist is re-applied once the
//! parent exists, also when the parent was created by a concurrent transaction (another writer lane, or another
//! replica) that could not see the parked row, nor the parking transaction the new parent.

mod support;

use std::str::FromStr;
use std::time::Duration;

use lookout_ingester::convert::Converter;
use lookout_ingester::writer::Writer;
use sqlx::Executor;
use sqlx::postgres::PgConnectOptions;
use support::events::*;
use support::http::poll_until;
use support::ingest::ingest;
use support::rows;

const PARKED: &str = "SELECT count(*) FROM lookout_ingester.parked_event";

fn submit(job: &str) -> Vec<u8> {
    seq("q", "js").at(T0, submit_job(job, 1, Some(pod(&[("cpu", "1")], None)), &[])).encode()
}

fn lease(job: &str, run: &str) -> Vec<u8> {
    seq("q", "js").at(T0 + 1, leased(job, run, "cluster", "node", "pool")).encode()
}

/// A writer on the test database, as the service builds one (for its reconciliation).
async fn writer(url: &str) -> Writer {
    let options = PgConnectOptions::from_str(url).unwrap();
    Writer::connect(options, Converter::default(), None, Duration::from_millis(200)).await.unwrap()
}

/// A row for `job_id` in `job`, as another writer would insert it.
const INSERT_JOB: &str = "
INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                 last_transition_time, last_transition_time_seconds, namespace, annotations)
VALUES ($1, 'q', 'u', 'js', 1000, 0, 0, 0, 1, to_timestamp(1700000000) AT TIME ZONE 'utc', 1,
        to_timestamp(1700000000) AT TIME ZONE 'utc', 1700000000, 'ns', '{}')";

/// Writer A creates job `j` while writer B, concurrently, parks the lease of `j` (A's insert is held on a row lock
/// until B has committed, so neither sees the other). A finds the parked lease after its commit and applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_parked_while_a_concurrent_writer_creates_its_job_is_applied() {
    let db = support::db::TestDb::migrated().await;

    // Holds A's insert of `j`: an uncommitted row with the same key makes `INSERT … ON CONFLICT` wait.
    let mut blocker = db.connect().await;
    blocker.execute("BEGIN").await.unwrap();
    sqlx::query(INSERT_JOB).bind("j").execute(&mut blocker).await.unwrap();

    let url = db.url.clone();
    let writer_a = tokio::spawn(async move { ingest(&url, &[submit("j")], 10).await });
    // Wait until A is blocked inside its transaction (it has looked for parked events already: none).
    let pool = &db.pool;
    let waiting = poll_until(Duration::from_secs(5), || async move {
        let n = rows::count(
            pool,
            // Only A can wait for a lock in this database (the blocker is idle in its transaction). The text of
            // A's statement is no help: pg_stat_activity keeps its first 1 kB, the CTEs before the INSERT.
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .await;
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(waiting, Some(1), "writer A should be waiting on the blocker");

    // Writer B: the job does not exist for it, so the lease is parked, and B commits.
    let b = ingest(&db.url, &[lease("j", "r")], 10).await;
    assert_eq!(b.parked, 1, "{b:?}");
    assert_eq!(rows::count(&db.pool, PARKED).await, 1);

    // Release A: it creates `j`, commits, and then finds the lease parked by B.
    blocker.execute("ROLLBACK").await.unwrap();
    let a = writer_a.await.unwrap();
    assert_eq!(a.events, 1);

    assert_eq!(rows::count(&db.pool, PARKED).await, 0, "the lease must not stay parked");
    let j = rows::job(&db.pool, "j").await;
    assert_eq!((j.state, j.latest_run_id.as_deref()), (8, Some("r")));
    assert_eq!(rows::run(&db.pool, "r").await.state, 11);
}

/// The periodic sweep applies what no writer's own check caught (its writer stopped between its commit and the
/// check): here the job appears without the store, and events for jobs that still do not exist stay parked.
#[tokio::test]
async fn the_sweep_applies_parked_events_whose_parent_exists_and_keeps_the_others() {
    let db = support::db::TestDb::migrated().await;
    let s = ingest(&db.url, &[lease("j", "r"), lease("ghost", "g")], 10).await;
    assert_eq!(s.parked, 2);

    sqlx::query(INSERT_JOB).bind("j").execute(&db.pool).await.unwrap();
    let store = writer(&db.url).await;
    assert_eq!(store.reconcile(None).await.unwrap(), 1);
    assert_eq!(store.reconcile(None).await.unwrap(), 0, "nothing more to apply");

    let j = rows::job(&db.pool, "j").await;
    assert_eq!((j.state, j.latest_run_id.as_deref()), (8, Some("r")));
    let left: Vec<(String, String)> = sqlx::query_as("SELECT job_id, event_kind FROM lookout_ingester.parked_event")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![("ghost".to_string(), "jobRunLeased".to_string())]);
}

/// A value fitted to the schema is recorded once, when its event is first seen, not again when the event, parked,
/// is re-applied.
#[tokio::test]
async fn a_parked_event_s_fitted_values_are_recorded_once() {
    let db = support::db::TestDb::migrated().await;
    const SANITIZED: &str = "SELECT count(*) FROM lookout_ingester.sanitized_value WHERE job_id = 'j'";
    let early = seq("q", "js").at(T0 + 2, running("j", "r", Some("node\0a"))).encode();
    let s = ingest(&db.url, &[early], 10).await;
    assert_eq!((s.parked, s.sanitized), (1, 1), "{s:?}");
    assert_eq!(rows::count(&db.pool, SANITIZED).await, 1);

    let s = ingest(&db.url, &[submit("j"), lease("j", "r")], 10).await;
    assert_eq!(s.unparked, 1, "{s:?}");
    assert_eq!(rows::run(&db.pool, "r").await.node.as_deref(), Some("nodea"));
    assert_eq!(rows::count(&db.pool, SANITIZED).await, 1, "recorded once");
}

/// A job's end applied before its run's lease (the lease was parked until the job existed; the end came in a later
/// batch, as a concurrent lane or replica can order it): the row is the one the scheduler's order gives — the job
/// succeeded, with that run as its latest run.
#[tokio::test]
async fn a_lease_applied_after_its_job_ended_still_names_the_latest_run() {
    let db = support::db::TestDb::migrated().await;
    let s = ingest(&db.url, &[lease("j", "r")], 10).await;
    assert_eq!(s.parked, 1, "{s:?}");

    // Another writer creates the job; the job's end is applied before the parked lease is.
    sqlx::query(INSERT_JOB).bind("j").execute(&db.pool).await.unwrap();
    let end = seq("q", "js").at(T0 + 5, job_succeeded("j")).encode();
    let s = ingest(&db.url, &[end], 10).await;
    assert_eq!(s.parked, 0, "{s:?}");
    let j = rows::job(&db.pool, "j").await;
    assert_eq!((j.state, j.latest_run_id.as_deref()), (4, None));

    let writer = writer(&db.url).await;
    assert_eq!(writer.reconcile(None).await.unwrap(), 1);
    let j = rows::job(&db.pool, "j").await;
    assert_eq!((j.state, j.latest_run_id.as_deref()), (4, Some("r")), "ended, and the run is its latest");
    assert_eq!(rows::run(&db.pool, "r").await.state, 11);
}
