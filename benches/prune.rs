//! Prune benchmark: how fast `prune` deletes terminal jobs from a large Lookout database.
//!
//! `DATABASE_URL=postgres://… cargo bench --bench prune -- [--jobs 1000000] [--batch-size 5000] [--eligible 1.0]`
//!
//! Creates a scratch database (dropped at the end), migrates it, generates `--jobs` terminal jobs with set-based SQL
//! (two runs, a spec and an error each; last transitions spread over the 30 days before a 20-day cut-off), runs
//! `ANALYZE` and a `CHECKPOINT`, then times `prune --older-than 14d` and prints jobs and rows deleted per second.
//! `--eligible` is the share of jobs older than the retention (the rest are recent and stay).

use std::str::FromStr;
use std::time::Instant;

use lookout_ingester::analytics::prune::{DEFAULT_BATCH_SIZE, PruneOptions, prune};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

struct Args {
    jobs: u64,
    batch_size: usize,
    eligible: f64,
}

fn args() -> Args {
    let mut a = Args { jobs: 1_000_000, batch_size: DEFAULT_BATCH_SIZE, eligible: 1.0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--jobs" => a.jobs = value().parse().expect("--jobs"),
            "--batch-size" => a.batch_size = value().parse().expect("--batch-size"),
            "--eligible" => a.eligible = value().parse().expect("--eligible"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let a = args();
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL (a role that may create databases)");
    let name = format!("li_bench_prune_{}", std::process::id());
    let admin_opts = PgConnectOptions::from_str(&admin_url).expect("DATABASE_URL");
    let mut admin = admin_opts.connect().await.expect("connect");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
    let opts = admin_opts.clone().database(&name);
    let pool = PgPoolOptions::new().max_connections(2).connect_with(opts).await.expect("connect");
    lookout_ingester::migrate::migrate(&pool).await.expect("migrate");

    let recent = ((1.0 - a.eligible) * a.jobs as f64).round() as u64;
    let generate = format!(
        "
INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted, state,
                 last_transition_time, last_transition_time_seconds, annotations, latest_run_id)
SELECT 'job' || i, 'queue-' || (i % 40), 'owner', 'set-' || (i % 4000), 1000, 1, 1, 0, 1, t - interval '1 hour',
       (ARRAY[4, 5, 6, 7, 9])[1 + i % 5], t, extract(epoch FROM t)::bigint, '{{}}'::jsonb, 'run' || i || 'b'
FROM (SELECT i, (now() AT TIME ZONE 'UTC')
                 - CASE WHEN i <= {recent} THEN interval '1 day' ELSE interval '20 days' END
                 - (i % 43200) * interval '1 minute' AS t
      FROM generate_series(1, {jobs}) i) s;
INSERT INTO job_run (run_id, job_id, cluster, node, job_run_state, leased, started, finished, failure_category)
SELECT j.job_id || r.n, j.job_id, 'cluster-1', 'node-1', CASE r.n WHEN 'a' THEN 4 ELSE 3 END,
       j.last_transition_time, j.last_transition_time, j.last_transition_time,
       CASE r.n WHEN 'a' THEN 'oom' END
FROM job j CROSS JOIN (VALUES ('a'), ('b')) r (n);
INSERT INTO job_spec (job_id, job_spec) SELECT job_id, decode(repeat('00', 200), 'hex') FROM job;
INSERT INTO job_error (job_id, error) SELECT job_id, decode(repeat('00', 50), 'hex') FROM job;
ANALYZE;
CHECKPOINT;",
        jobs = a.jobs
    );
    let t = Instant::now();
    sqlx::raw_sql(&generate).execute(&pool).await.expect("generate");
    println!(
        "generated {} jobs ({} eligible), {} runs, {} specs, {} errors in {:.1} s",
        a.jobs,
        a.jobs - recent,
        2 * a.jobs,
        a.jobs,
        a.jobs,
        t.elapsed().as_secs_f64()
    );

    let opts = PruneOptions {
        older_than: std::time::Duration::from_secs(14 * 86_400),
        batch_size: a.batch_size,
        dry_run: false,
    };
    let report = prune(&pool, &opts, None, |_| {}).await.expect("prune");
    let d = &report.deleted;
    let rows = d.jobs + d.runs + d.specs + d.errors;
    println!("{}", report.summary());
    println!(
        "prune: {} jobs in {:.2} s = {:.0} jobs/s ({:.0} rows/s), batch size {}, {} batches",
        d.jobs,
        report.elapsed.as_secs_f64(),
        report.jobs_per_second(),
        rows as f64 / report.elapsed.as_secs_f64(),
        a.batch_size,
        report.batches
    );
    pool.close().await;
    admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await.expect("drop database");
    let _ = admin.close().await;
}
