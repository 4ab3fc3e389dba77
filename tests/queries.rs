//! docs/queries.md is executable: every `sql` block in it is run against fixture data with known answers, and
//! (the `plans` test) its plan on a table of a million runs must read an index.
//!
//! Each block starts with `-- query: <name>`; [`expected`] holds the answer of each name. The documented queries
//! use `now()`, which is pinned here to [`NOW`] (the fixture's clock) by replacing the text `now()`.

mod support;

use sqlx::PgPool;
use support::db::TestDb;

/// The instant the fixture's timestamps are relative to.
const NOW: &str = "'2026-01-10 12:00:00+00'::timestamptz";

/// The `sql` blocks of docs/queries.md as (name, query).
fn doc_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/queries.md")).expect("docs");
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match &mut block {
            None if line.trim() == "```sql" => block = Some(String::new()),
            None => {}
            Some(b) if line.trim() == "```" => {
                let sql = std::mem::take(b);
                let name = sql
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("-- query:"))
                    .unwrap_or_else(|| panic!("a sql block in docs/queries.md has no `-- query: name` line:\n{sql}"))
                    .trim()
                    .to_string();
                out.push((name, sql));
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
        }
    }
    assert!(block.is_none(), "unterminated sql block in docs/queries.md");
    out
}

fn pinned(sql: &str) -> String {
    sql.replace("now()", NOW).trim().trim_end_matches(';').to_string()
}

/// Rows as JSON text, in the query's order.
async fn run(pool: &PgPool, sql: &str) -> Vec<String> {
    let wrapped = format!("SELECT row_to_json(q)::text FROM ({}\n) q", pinned(sql));
    sqlx::query_scalar(&wrapped).fetch_all(pool).await.unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

/// Nine jobs in two queues over two clusters and three nodes; see the comments for what each one is for.
const FIXTURE: &str = "
INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                 last_transition_time, last_transition_time_seconds, annotations, latest_run_id)
SELECT id, queue, 'alice', jobset, 1000, 1, 1, 0, 1, ltt - interval '3 hours', state, ltt,
       extract(epoch FROM ltt)::bigint, '{}'::jsonb, latest
FROM (VALUES
    ('j1',  'queue-a', 'set-1', 4, timestamp '2026-01-10 10:40', 'r1b'),   -- succeeded after an OOM
    ('j2',  'queue-a', 'set-1', 5, timestamp '2026-01-10 11:15', 'r2b'),   -- lease expired, then OOM: failed
    ('j3',  'queue-a', 'set-2', 7, timestamp '2026-01-10 11:20', 'r3a'),   -- preempted, no category
    ('j4',  'queue-b', 'set-3', 5, timestamp '2026-01-10 11:30', 'r4a'),   -- a category the taxonomy lacks
    ('j5',  'queue-b', 'set-3', 5, timestamp '2026-01-10 11:50', 'r5a'),   -- user error
    ('j6',  'queue-a', 'set-1', 5, timestamp '2026-01-01 10:00', 'r6a'),   -- outside every window
    ('j7',  'queue-b', 'set-3', 3, timestamp '2026-01-10 11:55', 'r7a'),   -- still running
    ('j8',  'queue-a', 'set-2', 4, timestamp '2026-01-10 11:00', 'r8a'),   -- plain success
    ('j9',  'queue-a', 'set-2', 5, timestamp '2026-01-07 09:00', 'r9a'),   -- in the 7-day window only
    ('j10', 'queue-b', 'set-3', 4, timestamp '2026-01-10 11:58', 'r10a')   -- SUCCEEDED but its run still runs
) AS v (id, queue, jobset, state, ltt, latest);

INSERT INTO job_run (run_id, job_id, cluster, node, job_run_state, leased, started, finished, failure_category,
                     failure_subcategory)
VALUES
    ('r1a',  'j1',  'cluster-a', 'node-1', 4, '2026-01-10 09:00', '2026-01-10 09:05', '2026-01-10 10:10', 'oom', 'oom-killed'),
    ('r1b',  'j1',  'cluster-a', 'node-2', 3, '2026-01-10 10:15', '2026-01-10 10:20', '2026-01-10 10:40', NULL, NULL),
    ('r2a',  'j2',  'cluster-a', 'node-1', 9, '2026-01-10 10:00', NULL,               '2026-01-10 10:30', 'internal', 'lease-expired'),
    ('r2b',  'j2',  'cluster-a', 'node-1', 4, '2026-01-10 10:35', '2026-01-10 10:45', '2026-01-10 11:15', 'oom', NULL),
    ('r3a',  'j3',  'cluster-b', 'node-3', 6, '2026-01-10 10:55', '2026-01-10 11:00', '2026-01-10 11:20', NULL, NULL),
    ('r4a',  'j4',  'cluster-b', 'node-3', 4, '2026-01-10 07:55', '2026-01-10 08:00', '2026-01-10 11:30', 'weird', 'x'),
    ('r5a',  'j5',  'cluster-b', 'node-2', 4, '2026-01-10 11:35', '2026-01-10 11:40', '2026-01-10 11:50', 'user-error', NULL),
    ('r6a',  'j6',  'cluster-a', 'node-1', 4, '2026-01-01 09:00', '2026-01-01 09:01', '2026-01-01 10:00', 'oom', NULL),
    ('r7a',  'j7',  'cluster-b', 'node-2', 2, '2026-01-10 11:50', '2026-01-10 11:52', NULL, NULL, NULL),
    ('r8a',  'j8',  'cluster-a', 'node-2', 3, '2026-01-10 10:50', '2026-01-10 10:51', '2026-01-10 11:00', NULL, NULL),
    ('r9a',  'j9',  'cluster-a', 'node-1', 8, '2026-01-07 08:55', NULL,               '2026-01-07 09:00', 'lease-returned', NULL),
    ('r10a', 'j10', 'cluster-b', 'node-2', 2, '2026-01-10 11:56', '2026-01-10 11:57', NULL, NULL, NULL);
";

/// The answer of each documented query on [`FIXTURE`] (worked out by hand from the rows above).
fn expected(name: &str) -> Option<Vec<&'static str>> {
    Some(match name {
        // 24 h window: r1a, r2a (10:00 hour); r2b, r3a, r4a, r5a (11:00 hour). r6a and r9a are older.
        "failures_per_hour" => vec![
            r#"{"hour":"2026-01-10T10:00:00","category":"internal","failures":1}"#,
            r#"{"hour":"2026-01-10T10:00:00","category":"oom","failures":1}"#,
            r#"{"hour":"2026-01-10T11:00:00","category":"-","failures":1}"#,
            r#"{"hour":"2026-01-10T11:00:00","category":"oom","failures":1}"#,
            r#"{"hour":"2026-01-10T11:00:00","category":"user-error","failures":1}"#,
            r#"{"hour":"2026-01-10T11:00:00","category":"weird","failures":1}"#,
        ],
        // oom within 7 days: r1a (oom-killed) and r2b (no subcategory); r6a is 9 days old.
        "one_category_per_day" => vec![
            r#"{"day":"2026-01-10T00:00:00","subcategory":"oom-killed","failures":1}"#,
            r#"{"day":"2026-01-10T00:00:00","subcategory":null,"failures":1}"#,
        ],
        "mix_by_queue" => vec![
            r#"{"queue":"queue-a","category":"oom","failures":2}"#,
            r#"{"queue":"queue-a","category":"-","failures":1}"#,
            r#"{"queue":"queue-a","category":"internal","failures":1}"#,
            r#"{"queue":"queue-b","category":"user-error","failures":1}"#,
            r#"{"queue":"queue-b","category":"weird","failures":1}"#,
        ],
        // queue-a jobs FAILED/PREEMPTED/REJECTED in 7 days: j2 (r2a, r2b), j3 (r3a), j9 (r9a). j1 succeeded.
        "one_queue_failed_jobs" => vec![
            r#"{"category":"-","failed_runs":1,"jobs":1}"#,
            r#"{"category":"internal","failed_runs":1,"jobs":1}"#,
            r#"{"category":"lease-returned","failed_runs":1,"jobs":1}"#,
            r#"{"category":"oom","failed_runs":1,"jobs":1}"#,
        ],
        // Blame: oom → user (category default), internal/lease-expired → system, none/weird → unknown.
        "top_nodes" => vec![
            r#"{"cluster":"cluster-a","node":"node-1","failures":3,"system_failures":1}"#,
            r#"{"cluster":"cluster-b","node":"node-3","failures":2,"system_failures":0}"#,
            r#"{"cluster":"cluster-b","node":"node-2","failures":1,"system_failures":0}"#,
        ],
        "one_node" => vec![
            r#"{"category":"oom","failures":2,"last_failure":"2026-01-10T11:15:00"}"#,
            r#"{"category":"internal","failures":1,"last_failure":"2026-01-10T10:30:00"}"#,
            r#"{"category":"lease-returned","failures":1,"last_failure":"2026-01-07T09:00:00"}"#,
        ],
        "mix_by_cluster" => vec![
            r#"{"cluster":"cluster-a","category":"oom","failures":2}"#,
            r#"{"cluster":"cluster-a","category":"internal","failures":1}"#,
            r#"{"cluster":"cluster-b","category":"-","failures":1}"#,
            r#"{"cluster":"cluster-b","category":"user-error","failures":1}"#,
            r#"{"cluster":"cluster-b","category":"weird","failures":1}"#,
        ],
        "one_cluster_per_hour" => vec![r#"{"hour":"2026-01-10T11:00:00","failures":3}"#],
        "top_jobsets" => vec![
            r#"{"queue":"queue-a","jobset":"set-1","failed_runs":3,"jobs":2}"#,
            r#"{"queue":"queue-b","jobset":"set-3","failed_runs":2,"jobs":2}"#,
            r#"{"queue":"queue-a","jobset":"set-2","failed_runs":1,"jobs":1}"#,
        ],
        // Ended in 24 h: queue-a j1 (2 runs), j2 (2), j3, j8; queue-b j4, j5, j10. j7 is running.
        "retry_amplification" => vec![
            r#"{"queue":"queue-a","jobs":4,"runs":6,"runs_per_job":1.50,"max_runs":2}"#,
            r#"{"queue":"queue-b","jobs":3,"runs":3,"runs_per_job":1.00,"max_runs":1}"#,
        ],
        // oom: 65 min (r1a) and 30 min (r2b); r2a and r9a never started, so from their lease.
        "time_to_failure" => vec![
            r#"{"category":"oom","failures":2,"p50_seconds":2850.0,"max_seconds":3900.0}"#,
            r#"{"category":"-","failures":1,"p50_seconds":1200.0,"max_seconds":1200.0}"#,
            r#"{"category":"internal","failures":1,"p50_seconds":1800.0,"max_seconds":1800.0}"#,
            r#"{"category":"lease-returned","failures":1,"p50_seconds":300.0,"max_seconds":300.0}"#,
            r#"{"category":"user-error","failures":1,"p50_seconds":600.0,"max_seconds":600.0}"#,
            r#"{"category":"weird","failures":1,"p50_seconds":12600.0,"max_seconds":12600.0}"#,
        ],
        // 7 days: user r1a r2b r5a; system r2a r9a (lease-returned); unknown r3a r4a.
        "blame_share" => vec![
            r#"{"blame":"user","failures":3,"percent":42.9}"#,
            r#"{"blame":"system","failures":2,"percent":28.6}"#,
            r#"{"blame":"unknown","failures":2,"percent":28.6}"#,
        ],
        "system_errors" => vec![
            r#"{"run_id":"r2a","queue":"queue-a","cluster":"cluster-a","node":"node-1","failure_category":"internal","failure_subcategory":"lease-expired"}"#,
        ],
        "unknown_categories" => vec![r#"{"failure_category":"weird","failure_subcategory":"x","runs":1}"#],
        "inconsistent_jobs" => {
            vec![r#"{"job_id":"j10","state":4,"job_run_state":2,"problem":"succeeded_without_successful_run"}"#]
        }
        _ => return None,
    })
}

#[tokio::test]
async fn documented_queries_give_the_known_answers() {
    let db = TestDb::migrated().await;
    sqlx::raw_sql(FIXTURE).execute(&db.pool).await.expect("fixture");
    let queries = doc_queries();
    assert!(queries.len() >= 12, "docs/queries.md lost queries: {}", queries.len());
    let mut failures = Vec::new();
    for (name, sql) in &queries {
        let Some(want) = expected(name) else {
            failures.push(format!("{name}: no expected answer in tests/queries.rs"));
            continue;
        };
        let got = run(&db.pool, sql).await;
        if got != want {
            failures.push(format!("{name}:\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The views answer like the queries (and the consistency view is empty once the contradiction is fixed).
#[tokio::test]
async fn views_over_the_fixture() {
    let db = TestDb::migrated().await;
    sqlx::raw_sql(FIXTURE).execute(&db.pool).await.expect("fixture");
    let rows = |sql: &'static str| run(&db.pool, sql);
    assert_eq!(
        rows("SELECT category, subcategory, runs FROM lookout_ingester.unknown_failure_category").await,
        vec![r#"{"category":"weird","subcategory":"x","runs":1}"#]
    );
    assert_eq!(
        rows("SELECT blame, count(*) FROM lookout_ingester.failed_run GROUP BY 1 ORDER BY 1").await,
        vec![r#"{"blame":"system","count":2}"#, r#"{"blame":"unknown","count":2}"#, r#"{"blame":"user","count":4}"#]
    );
    assert_eq!(
        rows(
            "SELECT queue, jobset, failed_runs, jobs_with_failures FROM lookout_ingester.top_failing_jobsets \
              ORDER BY failed_runs DESC, queue, jobset LIMIT 1"
        )
        .await,
        vec![r#"{"queue":"queue-a","jobset":"set-1","failed_runs":4,"jobs_with_failures":3}"#]
    );
    assert_eq!(
        rows(
            "SELECT node, category, failures FROM lookout_ingester.failure_mix_per_node WHERE node = 'node-1' \
              ORDER BY category"
        )
        .await,
        vec![
            r#"{"node":"node-1","category":"internal","failures":1}"#,
            r#"{"node":"node-1","category":"lease-returned","failures":1}"#,
            r#"{"node":"node-1","category":"oom","failures":3}"#,
        ]
    );
    assert_eq!(
        rows("SELECT cluster, sum(failures) AS n FROM lookout_ingester.failure_mix_per_cluster GROUP BY 1 ORDER BY 1")
            .await,
        vec![r#"{"cluster":"cluster-a","n":5}"#, r#"{"cluster":"cluster-b","n":3}"#]
    );
    assert_eq!(
        rows(
            "SELECT hour, category, failures FROM lookout_ingester.failures_per_hour \
              WHERE hour = '2026-01-10 10:00' ORDER BY category"
        )
        .await,
        vec![
            r#"{"hour":"2026-01-10T10:00:00","category":"internal","failures":1}"#,
            r#"{"hour":"2026-01-10T10:00:00","category":"oom","failures":1}"#,
        ]
    );
    // An operator fixes the taxonomy gap: the view empties and the blame follows.
    sqlx::query("INSERT INTO lookout_ingester.failure_taxonomy (category, blame) VALUES ('weird', 'system')")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(rows("SELECT * FROM lookout_ingester.unknown_failure_category").await.is_empty());
    assert_eq!(
        rows("SELECT blame FROM lookout_ingester.failed_run WHERE run_id = 'r4a'").await,
        vec![r#"{"blame":"system"}"#]
    );
    // Every kind of contradiction is reported; a consistent database reports none.
    sqlx::raw_sql(
        "UPDATE job_run SET job_run_state = 3, finished = '2026-01-10 11:59' WHERE run_id = 'r10a';
         UPDATE job SET state = 5 WHERE job_id = 'j7';
         UPDATE job SET state = 3 WHERE job_id = 'j5';
         UPDATE job SET latest_run_id = 'nope' WHERE job_id = 'j8';",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows("SELECT job_id, problem FROM lookout_ingester.inconsistent_job ORDER BY job_id").await,
        vec![
            r#"{"job_id":"j5","problem":"active_with_ended_run"}"#,
            r#"{"job_id":"j7","problem":"ended_with_active_run"}"#,
            r#"{"job_id":"j8","problem":"missing_latest_run"}"#,
        ]
    );
}

/// A million runs built with set-based SQL: 500 000 jobs over 30 days before [`NOW`], two runs each, the first run
/// of every other job failed (a quarter of all runs) with a rotating category, node and cluster.
const MILLION: &str = "
INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                 last_transition_time, last_transition_time_seconds, annotations, latest_run_id)
SELECT 'job' || i, 'queue-' || (i % 40), 'owner', 'set-' || (i % 4000), 1000, 1, 1, 0, 1, t - interval '1 hour',
       CASE WHEN i % 2 = 0 THEN 5 ELSE 4 END, t, extract(epoch FROM t)::bigint, '{}'::jsonb, 'run' || i || 'b'
FROM (SELECT i, timestamp '2026-01-10 12:00' - (i % 43200) * interval '1 minute' AS t
      FROM generate_series(1, 500000) i) s;

INSERT INTO job_run (run_id, job_id, cluster, node, job_run_state, leased, started, finished, failure_category,
                     failure_subcategory)
SELECT 'run' || i || r.n, 'job' || i, 'cluster-' || (i % 8), 'node-' || (i % 3000),
       CASE WHEN r.n = 'a' AND i % 2 = 0 THEN (ARRAY[4, 6, 8, 9])[1 + i / 2 % 4] ELSE 3 END,
       t - interval '50 minutes', t - interval '45 minutes', t - CASE r.n WHEN 'a' THEN interval '20 minutes' ELSE interval '0' END,
       CASE WHEN r.n = 'a' AND i % 2 = 0 THEN (ARRAY['oom', 'internal', 'user-error', 'eviction', 'image-pull', 'weird', NULL])[1 + i % 7] END,
       CASE WHEN r.n = 'a' AND i % 2 = 0 AND i % 7 = 1 THEN 'lease-expired' END
FROM (SELECT i, timestamp '2026-01-10 12:00' - (i % 43200) * interval '1 minute' AS t
      FROM generate_series(1, 500000) i) s
CROSS JOIN (VALUES ('a'), ('b')) r (n);
ANALYZE job;
ANALYZE job_run;
";

/// Every documented query, on a million runs, reads `job` and `job_run` through an index (no sequential scan of
/// either table). Prints the plans.
#[tokio::test]
async fn plans() {
    let db = TestDb::migrated().await;
    let started = std::time::Instant::now();
    sqlx::raw_sql(MILLION).execute(&db.pool).await.expect("million runs");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_run").fetch_one(&db.pool).await.unwrap();
    assert!(runs >= 1_000_000);
    println!("generated {runs} runs in {:.1} s", started.elapsed().as_secs_f64());
    let mut failures = Vec::new();
    for (name, sql) in doc_queries() {
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", pinned(&sql)))
            .fetch_all(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = plan.join("\n");
        println!("--- {name}\n{plan}\n");
        let seq_scan = plan.lines().any(|l| l.contains("Seq Scan on job_run ") || l.contains("Seq Scan on job "));
        let index = plan.lines().any(|l| l.contains("Index Scan") || l.contains("Index Only Scan"));
        if seq_scan || !index {
            failures.push(format!("{name} does not read through an index:\n{plan}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
