//! Plan guards: the statements of a write (orphan take, merged inserts, guarded merges) reach stored rows and staged
//! rows by key, also on a young database whose tables were never analyzed (a rebuild from the topic runs faster
//! than autovacuum looks) and with staging tables that never are. A plan
//! that scans a table once per staged row is quadratic in the batch and was once seen taking 90% of a batch.
//!
//! The test looks at plan shapes only (`EXPLAIN`, nothing timed).

mod support;

use lookout_ingester::store::stage;
use serde_json::Value;
use sqlx::Executor;
use support::events::*;

/// Seq scans of a Lookout table or a staging table that run once per row of an outer input (the inner side of a
/// nested loop, also under a Materialize, or a subplan), as `(relation, path)`.
fn per_row_scans(node: &Value, per_row: bool, path: &str, out: &mut Vec<(String, String)>) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    let relation = node["Relation Name"].as_str().unwrap_or("");
    let here = format!("{path} > {kind}");
    let ours = matches!(relation, "job" | "job_run" | "job_spec" | "job_error") || relation.starts_with("li_");
    if per_row && kind == "Seq Scan" && ours {
        out.push((relation.to_string(), here.clone()));
    }
    let Some(children) = node["Plans"].as_array() else { return };
    for child in children {
        let relationship = child["Parent Relationship"].as_str().unwrap_or("");
        let inner_of_loop = kind == "Nested Loop" && relationship == "Inner";
        per_row_scans(child, per_row || inner_of_loop || relationship == "SubPlan", &here, out);
    }
}

/// `jobs` jobs, each submitted and leased (one message each).
fn jobs_with_runs(jobs: usize) -> Vec<Vec<u8>> {
    (0..jobs)
        .map(|i| {
            let (job, run) = (format!("01plan{i:0>20}"), format!("00000000-0000-4000-8000-{i:0>12}"));
            seq("q", "js")
                .at(T0, submit_job(&job, 1, Some(pod(&[("cpu", "1")], None)), &[]))
                .at(T0 + 1, leased(&job, &run, "cluster", "node", "pool"))
                .encode()
        })
        .collect()
}

/// Keeps autovacuum from analyzing Lookout's tables during a test (only the store may).
async fn without_autovacuum(conn: &mut sqlx::PgConnection) {
    for table in ["job", "job_run", "job_spec", "job_error"] {
        conn.execute(format!("ALTER TABLE {table} SET (autovacuum_enabled = false)").as_str()).await.unwrap();
    }
}

#[tokio::test]
async fn merges_probe_stored_rows_by_key_while_statistics_are_missing() {
    let db = support::db::TestDb::migrated().await;
    let mut conn = db.connect().await;
    // No statistics for the whole test: autovacuum must not analyze behind our back.
    without_autovacuum(&mut conn).await;
    // 2000 jobs with a run each (fewer inserted rows than make the store analyze on its own).
    let jobs = 2000;
    let messages = jobs_with_runs(jobs);
    let summary = support::ingest::ingest(&db.url, &messages, 10_000).await;
    assert_eq!(summary.events, 2 * jobs, "{summary:?}");
    let analyzed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('job', 'job_run')
           AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(analyzed, 0, "the tables must be without statistics for this test");

    // Stage what a batch of progress and updates for every job and run looks like (in a transaction: the staging
    // tables empty at commit).
    // Plus as many new jobs, each with a run, a run update and progress (the staged-insert fallback's input).
    for ddl in stage::STAGING {
        conn.execute(*ddl).await.unwrap();
    }
    conn.execute("BEGIN").await.unwrap();
    conn.execute(
        "INSERT INTO li_job_progress (job_id, run_id, phase, at)
           SELECT job_id, run_id, phase, now() FROM job_run, generate_series(1, 3) phase;
         INSERT INTO li_job_update (job_id, priority, priority_at) SELECT job_id, 2, now() FROM job;
         INSERT INTO li_run_update (run_id, active_state, started) SELECT run_id, 2, now() FROM job_run;
         INSERT INTO li_job_new (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority,
                                 submitted, namespace, annotations, external_job_uri)
           SELECT 'new' || i, 'q', 'u', 'js', 1, 1, 0, 0, 1, now(), 'ns', '{}', '' FROM generate_series(1, 2000) i;
         INSERT INTO li_run_new (run_id, job_id, cluster, leased) SELECT 'newrun' || i, 'new' || i, 'c', now()
           FROM generate_series(1, 2000) i;
         INSERT INTO li_run_update (run_id, active_state, started) SELECT 'newrun' || i, 2, now()
           FROM generate_series(1, 2000) i;
         INSERT INTO li_job_progress (job_id, run_id, phase, at) SELECT 'new' || i, 'newrun' || i, 3, now()
           FROM generate_series(1, 2000) i;
         INSERT INTO li_job_update (job_id, term_state, term_at) SELECT 'new' || i, 4, now()
           FROM generate_series(1, 2000) i",
    )
    .await
    .unwrap();

    let mut found = Vec::new();
    for (name, statement) in stage::STATEMENTS {
        let plan: Value =
            sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {statement}")).fetch_one(&mut conn).await.unwrap();
        let root = &plan[0]["Plan"];
        per_row_scans(root, false, name, &mut found);
    }
    assert!(found.is_empty(), "tables scanned once per staged row: {found:#?}");
}

/// The writer's background statistics refresh (`store::statistics`) runs on a real database once enough rows were
/// inserted, and analyzes the join keys only: `job_id` gets statistics, a wide column such as `annotations` does
/// not, and the table's size (`reltuples`) is known to the planner.
#[tokio::test]
async fn a_growing_database_gets_statistics_for_its_join_keys() {
    let db = support::db::TestDb::migrated().await;
    let mut conn = db.connect().await;
    without_autovacuum(&mut conn).await;
    // 3000 jobs with a run each: 6000 inserted rows, past the store's first refresh at 5000.
    let jobs = 3000;
    let messages = jobs_with_runs(jobs);
    support::ingest::ingest(&db.url, &messages, 10_000).await;

    let pool = db.pool.clone();
    support::http::eventually("job and job_run analyzed", std::time::Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let analyzed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('job', 'job_run') AND last_analyze IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (analyzed == 2).then_some(())
        }
    })
    .await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT tablename || '.' || attname FROM pg_stats WHERE tablename IN ('job', 'job_run') ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(columns.contains(&"job.job_id".to_string()), "{columns:?}");
    assert!(columns.contains(&"job_run.run_id".to_string()), "{columns:?}");
    assert!(!columns.contains(&"job.annotations".to_string()), "a whole-table ANALYZE ran: {columns:?}");
    let reltuples: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'job'::regclass")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(reltuples, jobs as f32);
}
