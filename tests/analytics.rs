//! Failure analytics against the real Postgres: the opt-in classification (on and off), the taxonomy's seed rows
//! and operator edits, `stats`, and `prune` alone and while the writer ingests.

mod support;

use std::time::Duration;

use lookout_ingester::analytics::AnalyticsConfig;
use lookout_ingester::analytics::prune::{PruneCounts, PruneOptions, periodic, prune};
use lookout_ingester::analytics::stats::{StatsOptions, collect};
use lookout_ingester::convert::Converter;
use lookout_ingester::proto::armadaevents::{self as ev, EventKind, error::Reason};
use sqlx::PgPool;
use support::db::TestDb;
use support::events::*;
use support::http::eventually;
use support::ingest::ingest_with;
use support::rows::count;

const T: i64 = 1_767_000_000;

fn lifecycle(job: &str, run: &str, end: EventKind) -> Vec<u8> {
    seq("queue-a", "set-1")
        .at(T, submit_job(job, 1, None, &[]))
        .at(T + 1, leased(job, run, "cluster-a", "node-1", "pool"))
        .at(T + 2, running(job, run, Some("node-1")))
        .at(T + 3, end)
        .encode()
}

fn terminal(reason: Reason, category: &str, subcategory: &str) -> ev::Error {
    error(true, reason, category, subcategory)
}

/// Run id → (failure_category, failure_subcategory, ingester_category_source).
type Classified = Vec<(String, Option<String>, Option<String>, Option<String>)>;

async fn classify(converter: Converter) -> Classified {
    let db = TestDb::migrated().await;
    let messages = vec![
        lifecycle(
            "job-a",
            "run-a",
            run_errors("job-a", "run-a", vec![terminal(Reason::LeaseExpired(ev::LeaseExpired {}), "", "")]),
        ),
        lifecycle(
            "job-b",
            "run-b",
            run_errors("job-b", "run-b", vec![terminal(pod_error("killed", "node-1", &[137], ""), "", "")]),
        ),
        lifecycle(
            "job-c",
            "run-c",
            run_errors(
                "job-c",
                "run-c",
                vec![terminal(pod_error("killed", "node-1", &[137], ""), "infrastructure", "oom")],
            ),
        ),
        lifecycle("job-d", "run-d", run_preempted("job-d", "run-d", "higher priority", "job-x", "")),
        lifecycle(
            "job-e",
            "run-e",
            run_errors("job-e", "run-e", vec![terminal(pod_error("exit 1", "node-1", &[1], ""), "", "")]),
        ),
        lifecycle(
            "job-f",
            "run-f",
            run_errors("job-f", "run-f", vec![terminal(lease_returned("gave up", ""), "", "")]),
        ),
        lifecycle("job-g", "run-g", run_errors("job-g", "run-g", vec![terminal(max_runs("too many"), "", "")])),
        lifecycle("job-h", "run-h", run_errors("job-h", "run-h", vec![terminal(rejected("bad spec"), "", "")])),
        // A non-terminal error ends nothing, so nothing is derived for it.
        lifecycle(
            "job-i",
            "run-i",
            run_errors("job-i", "run-i", vec![error(false, Reason::LeaseExpired(ev::LeaseExpired {}), "", "")]),
        ),
        // Only a subcategory from the executor: the derived category fills the gap, the subcategory is kept.
        lifecycle(
            "job-j",
            "run-j",
            run_errors(
                "job-j",
                "run-j",
                vec![terminal(Reason::LeaseExpired(ev::LeaseExpired {}), "", "executor-gone")],
            ),
        ),
    ];
    ingest_with(&db.url, &messages, 1000, converter).await;
    sqlx::query_as(
        "SELECT run_id, failure_category, failure_subcategory, ingester_category_source FROM job_run ORDER BY run_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn row(
    run: &str,
    c: Option<&str>,
    s: Option<&str>,
    src: Option<&str>,
) -> (String, Option<String>, Option<String>, Option<String>) {
    (run.into(), c.map(Into::into), s.map(Into::into), src.map(Into::into))
}

#[tokio::test]
async fn classification_is_off_by_default_and_marks_what_it_derives() {
    let off = classify(Converter::default()).await;
    assert_eq!(
        off,
        vec![
            row("run-a", None, None, None),
            row("run-b", None, None, None),
            row("run-c", Some("infrastructure"), Some("oom"), None),
            row("run-d", None, None, None),
            row("run-e", None, None, None),
            row("run-f", None, None, None),
            row("run-g", None, None, None),
            row("run-h", None, None, None),
            row("run-i", None, None, None),
            row("run-j", None, Some("executor-gone"), None),
        ]
    );
    let on = classify(Converter { classify_failures: true, ..Converter::default() }).await;
    let ing = Some("ingester");
    assert_eq!(
        on,
        vec![
            row("run-a", Some("internal"), Some("lease-expired"), ing),
            row("run-b", Some("oom"), Some("exit-137"), ing),
            row("run-c", Some("infrastructure"), Some("oom"), None),
            row("run-d", Some("preemption"), None, ing),
            row("run-e", None, None, None),
            row("run-f", Some("lease-returned"), None, ing),
            row("run-g", Some("internal"), Some("max-runs-exceeded"), ing),
            row("run-h", Some("internal"), Some("job-rejected"), ing),
            row("run-i", None, None, None),
            row("run-j", Some("internal"), Some("executor-gone"), ing),
        ]
    );
}

#[tokio::test]
async fn taxonomy_is_seeded_and_upgrades_keep_operator_edits() {
    let db = TestDb::migrated().await;
    let internal: Vec<String> = sqlx::query_scalar(
        "SELECT subcategory FROM lookout_ingester.failure_taxonomy WHERE category = 'internal' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        internal,
        [
            "",
            "active-deadline",
            "externally-deleted",
            "issue-handler-error",
            "job-creation-failed",
            "job-rejected",
            "lease-expired",
            "max-runs-exceeded",
            "pod-missing",
            "stuck-terminating"
        ]
    );
    // An operator disagrees with a seed row.
    sqlx::query(
        "UPDATE lookout_ingester.failure_taxonomy SET blame = 'system', description = 'our nodes are small' \
         WHERE category = 'oom' AND subcategory = ''",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // The migration's seed statement, run again (as a later seed migration would): the edit stays.
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/V1004__failure_taxonomy.sql"))
        .unwrap();
    let start = file.find("INSERT INTO lookout_ingester.failure_taxonomy").unwrap();
    let end = start + file[start..].find("DO NOTHING;").unwrap() + "DO NOTHING".len();
    let inserted = sqlx::query(&file[start..end]).execute(&db.pool).await.unwrap().rows_affected();
    assert_eq!(inserted, 0);
    let (blame, description): (String, String) = sqlx::query_as(
        "SELECT blame, description FROM lookout_ingester.failure_taxonomy WHERE category = 'oom' AND subcategory = ''",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((blame.as_str(), description.as_str()), ("system", "our nodes are small"));
    // And migrating again changes nothing.
    lookout_ingester::migrate::migrate(&db.pool).await.unwrap();
    let blame: String = sqlx::query_scalar(
        "SELECT blame FROM lookout_ingester.failure_taxonomy WHERE category = 'oom' AND subcategory = ''",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(blame, "system");
    // Blame is checked.
    let bad = sqlx::query("INSERT INTO lookout_ingester.failure_taxonomy (category, blame) VALUES ('x', 'nobody')")
        .execute(&db.pool)
        .await;
    assert!(bad.is_err());
}

/// Jobs and runs relative to the real clock (stats and prune read `now()`).
async fn insert_jobs(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pool).await.expect("fixture");
}

const STATS_FIXTURE: &str = "
INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                 last_transition_time, last_transition_time_seconds, annotations)
SELECT id, queue, 'o', jobset, 1, 1, 1, 0, 1, ltt, state, ltt, extract(epoch FROM ltt)::bigint, '{}'::jsonb
FROM (SELECT id, queue, jobset, state, (now() AT TIME ZONE 'UTC') - age AS ltt FROM (VALUES
    ('s1', 'queue-a', 'set-1', 5, interval '1 hour'),
    ('s2', 'queue-b', 'set-2', 4, interval '30 minutes'),
    ('s3', 'queue-b', 'set-2', 5, interval '3 days')) v (id, queue, jobset, state, age)) s;
INSERT INTO job_run (run_id, job_id, cluster, node, job_run_state, leased, finished, failure_category,
                     failure_subcategory)
SELECT run, job, 'cluster-a', node, state, (now() AT TIME ZONE 'UTC') - age, (now() AT TIME ZONE 'UTC') - age, c, s
FROM (VALUES
    ('s1a', 's1', 'node-1', 4, interval '2 hours', 'oom', NULL),
    ('s1b', 's1', 'node-2', 9, interval '1 hour', 'internal', 'lease-expired'),
    ('s2a', 's2', 'node-1', 3, interval '30 minutes', NULL, NULL),
    ('s3a', 's3', 'node-1', 4, interval '3 days', 'user-error', NULL)) v (run, job, node, state, age, c, s);
";

#[tokio::test]
async fn stats_summarises_a_window() {
    let db = TestDb::migrated().await;
    insert_jobs(&db.pool, STATS_FIXTURE).await;
    let day = StatsOptions { since: Duration::from_secs(86_400), queue: None, top: 10 };
    let s = collect(&db.pool, &day).await.unwrap();
    assert_eq!((s.failed_runs, s.failed_jobs), (2, 1));
    let blame: Vec<(&str, i64, f64)> =
        s.by_blame.iter().map(|b| (b.blame.as_str(), b.failed_runs, b.percent)).collect();
    assert_eq!(blame, [("system", 1, 50.0), ("user", 1, 50.0)]);
    let cats: Vec<(Option<&str>, Option<&str>, &str)> =
        s.by_category.iter().map(|c| (c.category.as_deref(), c.subcategory.as_deref(), c.blame.as_str())).collect();
    assert_eq!(cats, [(Some("internal"), Some("lease-expired"), "system"), (Some("oom"), None, "user")]);
    assert_eq!(s.top_jobsets.len(), 1);
    assert_eq!(
        (s.top_jobsets[0].jobset.as_str(), s.top_jobsets[0].failed_runs, s.top_jobsets[0].jobs),
        ("set-1", 2, 1)
    );
    let nodes: Vec<(&str, i64, i64)> =
        s.top_nodes.iter().map(|n| (n.node.as_deref().unwrap(), n.failed_runs, n.system_blamed)).collect();
    assert_eq!(nodes, [("node-1", 1, 0), ("node-2", 1, 1)]);
    let r = &s.retry_amplification;
    assert_eq!((r.jobs, r.runs, r.max_runs, r.retried_jobs), (2, 3, 2, 1));
    assert!((r.runs_per_job - 1.5).abs() < 1e-9);
    // The table is aligned: each section's rows line up under its header.
    let text = s.to_string();
    assert!(text.contains("2 failed runs of 1 jobs"), "{text}");
    let header = text.lines().find(|l| l.contains("CATEGORY")).unwrap();
    let line = text.lines().find(|l| l.contains("lease-expired")).unwrap();
    assert_eq!(header.find("BLAME"), line.find("system"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["retry_amplification"]["runs"], 3);

    let week_b = StatsOptions { since: Duration::from_secs(7 * 86_400), queue: Some("queue-b".into()), top: 10 };
    let s = collect(&db.pool, &week_b).await.unwrap();
    assert_eq!((s.failed_runs, s.failed_jobs), (1, 1));
    assert_eq!(s.by_category[0].category.as_deref(), Some("user-error"));
    assert_eq!((s.retry_amplification.jobs, s.retry_amplification.runs), (2, 2));
}

/// `n` old terminal jobs (`old-…`, 30 days), two runs, a spec and an error each; `active` old jobs still RUNNING
/// (`act-…`); and a few recent terminal jobs (`new-…`).
fn prune_fixture(n: usize, active: usize) -> String {
    format!(
        "
INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                 last_transition_time, last_transition_time_seconds, annotations, latest_run_id)
SELECT id, 'queue-a', 'o', 'set-1', 1, 1, 1, 0, 1, ltt, state, ltt, extract(epoch FROM ltt)::bigint, '{{}}'::jsonb, id || '-r2'
FROM (SELECT 'old-' || i AS id, 4 + i % 3 AS state,
             (now() AT TIME ZONE 'UTC') - interval '30 days' - i * interval '1 second' AS ltt
      FROM generate_series(1, {n}) i
      UNION ALL
      SELECT 'act-' || i, 3, (now() AT TIME ZONE 'UTC') - interval '40 days' FROM generate_series(1, {active}) i
      UNION ALL
      SELECT 'new-' || i, 5, (now() AT TIME ZONE 'UTC') - interval '1 day' FROM generate_series(1, 10) i) s;
INSERT INTO job_run (run_id, job_id, cluster, node, job_run_state, leased, finished)
SELECT job_id || r, job_id, 'c', 'n', CASE WHEN state = 3 AND r = '-r2' THEN 2 ELSE 4 END, last_transition_time,
       CASE WHEN state = 3 AND r = '-r2' THEN NULL ELSE last_transition_time END
FROM job CROSS JOIN (VALUES ('-r1'), ('-r2')) v (r);
-- An empty api.Job as a zlib stream: a spec Lookout (and tests/support/spec_check.rs) can read.
INSERT INTO job_spec (job_id, job_spec) SELECT job_id, '\\x789c030000000001' FROM job;
INSERT INTO job_error (job_id, error) SELECT job_id, '\\x00' FROM job;
"
    )
}

#[tokio::test]
async fn prune_deletes_old_terminal_jobs_with_their_rows() {
    let db = TestDb::migrated().await;
    insert_jobs(&db.pool, &prune_fixture(1234, 7)).await;
    let opts = PruneOptions { older_than: Duration::from_secs(14 * 86_400), batch_size: 100, dry_run: true };
    let dry = prune(&db.pool, &opts, None, |_| {}).await.unwrap();
    let want = PruneCounts { jobs: 1234, runs: 2468, specs: 1234, errors: 1234 };
    assert_eq!(dry.deleted, want);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job").await, 1234 + 7 + 10, "a dry run deletes nothing");

    let mut batches = 0;
    let report =
        prune(&db.pool, &PruneOptions { dry_run: false, ..opts.clone() }, None, |p| batches = p.batches).await.unwrap();
    assert_eq!(report.deleted, want);
    assert_eq!(report.batches, 13);
    assert_eq!(batches, 13, "progress after every batch");
    assert!(
        report.summary().starts_with("pruned 1234 jobs, 2468 runs, 1234 specs, 1234 errors"),
        "{}",
        report.summary()
    );
    for (table, left) in [("job", 17), ("job_run", 34), ("job_spec", 17), ("job_error", 17)] {
        assert_eq!(count(&db.pool, &format!("SELECT count(*) FROM {table}")).await, left, "{table}");
        let old = count(&db.pool, &format!("SELECT count(*) FROM {table} WHERE job_id LIKE 'old-%'")).await;
        assert_eq!(old, 0, "{table}");
    }
    let again = prune(&db.pool, &PruneOptions { dry_run: false, ..opts }, None, |_| {}).await.unwrap();
    assert_eq!(again.deleted, PruneCounts::default());
}

/// The writer ingests new jobs and late events for the very jobs being pruned (their rows locked by the writer's
/// guarded updates) while prune runs in small batches: no deadlock, nothing non-terminal deleted, every old
/// terminal job deleted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_while_ingesting() {
    const OLD: usize = 20_000;
    const ACTIVE: usize = 300;
    const NEW: usize = 1_500;
    let db = TestDb::migrated().await;
    insert_jobs(&db.pool, &prune_fixture(OLD, ACTIVE)).await;
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    let deadlocks_before =
        count(&db.pool, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").await;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut messages = Vec::new();
    for i in 0..NEW {
        let (job, run) = (format!("fresh-{i}"), format!("fresh-{i}-r"));
        messages.push(lifecycle_at(&job, &run, now - 60));
        // Late events for old jobs: the writer locks their job row (reprioritised) or only a run row (debug info).
        let old = format!("old-{}", 1 + (i * 13) % OLD);
        let late = if i % 2 == 0 { reprioritised(&old, 7) } else { debug_info(&old, &format!("{old}-r1"), "late") };
        messages.push(seq("queue-a", "set-1").at(now, late).encode());
        if i % 5 == 0 {
            let act = format!("act-{}", 1 + i % ACTIVE);
            messages.push(seq("queue-a", "set-1").at(now, reprioritised(&act, 3)).encode());
        }
    }
    let writer = tokio::spawn({
        let url = db.url.clone();
        async move { ingest_with(&url, &messages, 200, Converter::default()).await }
    });
    let opts = PruneOptions { older_than: Duration::from_secs(14 * 86_400), batch_size: 40, dry_run: false };
    let mut deleted = PruneCounts::default();
    let (mut rounds, mut busy, mut first_round) = (0, 0, None);
    let tally = |total: &mut PruneCounts, c: &PruneCounts| {
        total.jobs += c.jobs;
        total.runs += c.runs;
        total.specs += c.specs;
        total.errors += c.errors;
    };
    while !writer.is_finished() {
        let r = prune(&db.pool, &opts, None, |_| {}).await.expect("prune while ingesting");
        tally(&mut deleted, &r.deleted);
        rounds += 1;
        busy += r.skipped_busy;
        first_round.get_or_insert(r.deleted.jobs);
    }
    let summary = writer.await.unwrap();
    let r = prune(&db.pool, &opts, None, |_| {}).await.expect("final prune");
    tally(&mut deleted, &r.deleted);
    println!(
        "{rounds} prune rounds beside {} writer batches; the first round deleted {first_round:?} of {OLD} jobs; \
         {busy} jobs skipped because the writer held one of their runs",
        summary.batches
    );
    assert!(rounds >= 1 && summary.batches > 10, "both ran: {rounds} prune rounds, {} batches", summary.batches);

    assert_eq!(deleted, PruneCounts { jobs: OLD as u64, runs: 2 * OLD as u64, specs: OLD as u64, errors: OLD as u64 });
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job WHERE job_id LIKE 'old-%'").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job_run WHERE job_id LIKE 'old-%'").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job WHERE job_id LIKE 'act-%'").await, ACTIVE as i64);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job_run WHERE job_id LIKE 'act-%'").await, 2 * ACTIVE as i64);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job WHERE job_id LIKE 'new-%'").await, 10);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job WHERE job_id LIKE 'fresh-%' AND state = 4").await, NEW as i64);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM lookout_ingester.inconsistent_job").await, 0);
    // Postgres' own count of deadlocks in this database (statistics are flushed within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&db.pool).await.unwrap();
    let deadlocks = count(&db.pool, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").await;
    assert_eq!(deadlocks, deadlocks_before, "deadlocks while pruning beside the writer");
}

fn lifecycle_at(job: &str, run: &str, t: i64) -> Vec<u8> {
    seq("queue-a", "set-9")
        .at(t, submit_job(job, 1, None, &[]))
        .at(t + 1, leased(job, run, "cluster-a", "node-1", "pool"))
        .at(t + 2, running(job, run, Some("node-1")))
        .at(t + 3, run_succeeded(job, run))
        .at(t + 4, job_succeeded(job))
        .encode()
}

#[tokio::test]
async fn the_service_prunes_periodically_only_when_configured() {
    let db = TestDb::migrated().await;
    insert_jobs(&db.pool, &prune_fixture(50, 2)).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let off = AnalyticsConfig::default();
    assert!(off.prune_interval.is_zero() && !off.classify_failures, "both off by default");
    tokio::time::timeout(Duration::from_secs(2), periodic(db.pool.clone(), off, cancel.clone()))
        .await
        .expect("with prune_interval 0 the task ends at once");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job WHERE job_id LIKE 'old-%'").await, 50);

    let on = AnalyticsConfig { prune_interval: Duration::from_millis(200), ..AnalyticsConfig::default() };
    let task = tokio::spawn(periodic(db.pool.clone(), on, cancel.clone()));
    let pool = &db.pool;
    eventually("the periodic prune", Duration::from_secs(20), || async move {
        (count(pool, "SELECT count(*) FROM job WHERE job_id LIKE 'old-%'").await == 0).then_some(())
    })
    .await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops when cancelled").unwrap();
    assert_eq!(count(&db.pool, "SELECT count(*) FROM job").await, 2 + 10, "active and recent jobs stay");
}

/// Rows the writer holds (a job row, and another job's run row, locked by an open transaction as the writer's
/// guarded updates do) are skipped without waiting, and deleted by the next prune once released.
#[tokio::test]
async fn prune_never_waits_for_the_writers_locks() {
    let db = TestDb::migrated().await;
    insert_jobs(&db.pool, &prune_fixture(100, 0)).await;
    let mut writer = db.connect().await;
    sqlx::raw_sql(
        "BEGIN;
         SELECT 1 FROM job WHERE job_id = 'old-10' FOR UPDATE;
         SELECT 1 FROM job_run WHERE run_id = 'old-20-r1' FOR UPDATE;",
    )
    .execute(&mut writer)
    .await
    .unwrap();
    let opts = PruneOptions { older_than: Duration::from_secs(14 * 86_400), batch_size: 30, dry_run: false };
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), prune(&db.pool, &opts, None, |_| {}))
        .await
        .expect("prune waited for a lock")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "no lock_timeout was hit: {:?}", started.elapsed());
    assert_eq!((r.deleted.jobs, r.skipped_busy), (98, 1));
    let left: Vec<String> = sqlx::query_scalar("SELECT job_id FROM job WHERE job_id LIKE 'old-%' ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, ["old-10", "old-20"]);
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    let r = prune(&db.pool, &opts, None, |_| {}).await.unwrap();
    assert_eq!(r.deleted, PruneCounts { jobs: 2, runs: 4, specs: 2, errors: 2 });
}
