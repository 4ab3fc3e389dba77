//! `lookout-ingester stats [--since 24h] [--queue Q] [--format table|json]`: a failure summary for a time window —
//! failed runs by category and blame, the blame split, the top failing job sets and nodes, and retry amplification
//! (runs per job of the jobs that ended in the window). Failed runs are those of `lookout_ingester.failed_run`
//! (V1004) whose run finished in the window; every query is served by the V1003 indexes.

use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;
use sqlx::PgPool;

/// How many job sets and nodes the summary lists.
pub const TOP: i64 = 10;

#[derive(Debug, Clone)]
pub struct StatsOptions {
    pub since: Duration,
    pub queue: Option<String>,
    pub top: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryRow {
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub blame: String,
    pub failed_runs: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BlameRow {
    pub blame: String,
    pub failed_runs: i64,
    /// Share of all failed runs in the window, in percent.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobSetRow {
    pub queue: String,
    pub jobset: String,
    pub failed_runs: i64,
    pub jobs: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeRow {
    pub cluster: String,
    pub node: Option<String>,
    pub failed_runs: i64,
    pub system_blamed: i64,
}

/// Runs per job of the jobs that reached a terminal state in the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetryAmplification {
    pub jobs: i64,
    pub runs: i64,
    pub runs_per_job: f64,
    pub max_runs: i64,
    /// Jobs that needed more than one run.
    pub retried_jobs: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Start of the window (UTC); the window ends now.
    #[serde(serialize_with = "utc")]
    pub since: NaiveDateTime,
    pub queue: Option<String>,
    pub failed_runs: i64,
    pub failed_jobs: i64,
    pub by_category: Vec<CategoryRow>,
    pub by_blame: Vec<BlameRow>,
    pub top_jobsets: Vec<JobSetRow>,
    pub top_nodes: Vec<NodeRow>,
    pub retry_amplification: RetryAmplification,
}

const SINCE: &str = "SELECT (now() AT TIME ZONE 'UTC') - make_interval(secs => $1)";

const TOTALS: &str = "
SELECT count(*), count(DISTINCT f.job_id) FROM lookout_ingester.failed_run f
WHERE f.finished >= $1 AND ($2::text IS NULL OR f.queue = $2)";

const BY_CATEGORY: &str = "
SELECT f.failure_category, f.failure_subcategory, f.blame, count(*)
FROM lookout_ingester.failed_run f
WHERE f.finished >= $1 AND ($2::text IS NULL OR f.queue = $2)
GROUP BY 1, 2, 3
ORDER BY 4 DESC, 1 NULLS LAST, 2 NULLS FIRST, 3";

const BY_BLAME: &str = "
SELECT f.blame, count(*) FROM lookout_ingester.failed_run f
WHERE f.finished >= $1 AND ($2::text IS NULL OR f.queue = $2)
GROUP BY 1 ORDER BY 2 DESC, 1";

const TOP_JOBSETS: &str = "
SELECT f.queue, f.jobset, count(*), count(DISTINCT f.job_id)
FROM lookout_ingester.failed_run f
WHERE f.finished >= $1 AND ($2::text IS NULL OR f.queue = $2)
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $3";

const TOP_NODES: &str = "
SELECT f.cluster, f.node, count(*), count(*) FILTER (WHERE f.blame = 'system')
FROM lookout_ingester.failed_run f
WHERE f.finished >= $1 AND ($2::text IS NULL OR f.queue = $2)
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 NULLS LAST LIMIT $3";

const RETRY: &str = "
WITH ended AS (
    SELECT j.job_id, (SELECT count(*) FROM job_run r WHERE r.job_id = j.job_id) AS runs
    FROM job j
    WHERE j.last_transition_time >= $1 AND j.state IN (4, 5, 6, 7, 9) AND ($2::text IS NULL OR j.queue = $2)
)
SELECT count(*), COALESCE(sum(runs), 0)::bigint, COALESCE(max(runs), 0), count(*) FILTER (WHERE runs > 1)
FROM ended";

/// Reads the summary.
pub async fn collect(pool: &PgPool, opts: &StatsOptions) -> sqlx::Result<Stats> {
    let mut conn = pool.acquire().await?;
    let since: NaiveDateTime = sqlx::query_scalar(SINCE).bind(opts.since.as_secs_f64()).fetch_one(&mut *conn).await?;
    let q = opts.queue.as_deref();
    let (failed_runs, failed_jobs): (i64, i64) =
        sqlx::query_as(TOTALS).bind(since).bind(q).fetch_one(&mut *conn).await?;
    let by_category = sqlx::query_as::<_, (Option<String>, Option<String>, String, i64)>(BY_CATEGORY)
        .bind(since)
        .bind(q)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(category, subcategory, blame, failed_runs)| CategoryRow { category, subcategory, blame, failed_runs })
        .collect();
    let by_blame = sqlx::query_as::<_, (String, i64)>(BY_BLAME)
        .bind(since)
        .bind(q)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(blame, n)| BlameRow { blame, failed_runs: n, percent: percent(n, failed_runs) })
        .collect();
    let top_jobsets = sqlx::query_as::<_, (String, String, i64, i64)>(TOP_JOBSETS)
        .bind(since)
        .bind(q)
        .bind(opts.top)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(queue, jobset, failed_runs, jobs)| JobSetRow { queue, jobset, failed_runs, jobs })
        .collect();
    let top_nodes = sqlx::query_as::<_, (String, Option<String>, i64, i64)>(TOP_NODES)
        .bind(since)
        .bind(q)
        .bind(opts.top)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(cluster, node, failed_runs, system_blamed)| NodeRow { cluster, node, failed_runs, system_blamed })
        .collect();
    let (jobs, runs, max_runs, retried_jobs): (i64, i64, i64, i64) =
        sqlx::query_as(RETRY).bind(since).bind(q).fetch_one(&mut *conn).await?;
    let runs_per_job = if jobs == 0 { 0.0 } else { runs as f64 / jobs as f64 };
    Ok(Stats {
        since,
        queue: opts.queue.clone(),
        failed_runs,
        failed_jobs,
        by_category,
        by_blame,
        top_jobsets,
        top_nodes,
        retry_amplification: RetryAmplification { jobs, runs, runs_per_job, max_runs, retried_jobs },
    })
}

/// `2026-01-10T12:00:00Z` (chrono is built without its serde feature).
fn utc<S: serde::Serializer>(ts: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn percent(n: i64, total: i64) -> f64 {
    if total == 0 { 0.0 } else { (n as f64 * 1000.0 / total as f64).round() / 10.0 }
}

/// Left-aligned text columns, right-aligned numbers; widths from the widest cell.
fn table(out: &mut String, headers: &[&str], numeric: &[bool], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        let _ = writeln!(out, "  {}", s.trim_end());
    };
    line(out, &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for row in rows {
        line(out, row);
    }
}

fn or_dash(v: &Option<String>) -> String {
    match v.as_deref() {
        None | Some("") => "-".into(),
        Some(s) => s.to_string(),
    }
}

/// The aligned table `stats` prints on a terminal.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let queue = self.queue.as_deref().map(|q| format!(", queue {q}")).unwrap_or_default();
        let _ = writeln!(out, "Failures since {} UTC{queue}", self.since.format("%Y-%m-%d %H:%M:%S"));
        let _ = writeln!(out, "  {} failed runs of {} jobs", self.failed_runs, self.failed_jobs);
        let _ = writeln!(out, "\nBy blame");
        let rows: Vec<Vec<String>> = self
            .by_blame
            .iter()
            .map(|b| vec![b.blame.clone(), b.failed_runs.to_string(), format!("{:.1}%", b.percent)])
            .collect();
        table(&mut out, &["BLAME", "RUNS", "SHARE"], &[false, true, true], &rows);
        let _ = writeln!(out, "\nBy category");
        let rows: Vec<Vec<String>> = self
            .by_category
            .iter()
            .map(|c| vec![or_dash(&c.category), or_dash(&c.subcategory), c.blame.clone(), c.failed_runs.to_string()])
            .collect();
        table(&mut out, &["CATEGORY", "SUBCATEGORY", "BLAME", "RUNS"], &[false, false, false, true], &rows);
        let _ = writeln!(out, "\nTop failing job sets");
        let rows: Vec<Vec<String>> = self
            .top_jobsets
            .iter()
            .map(|j| vec![j.queue.clone(), j.jobset.clone(), j.failed_runs.to_string(), j.jobs.to_string()])
            .collect();
        table(&mut out, &["QUEUE", "JOB SET", "FAILED RUNS", "JOBS"], &[false, false, true, true], &rows);
        let _ = writeln!(out, "\nTop nodes");
        let rows: Vec<Vec<String>> = self
            .top_nodes
            .iter()
            .map(|n| vec![n.cluster.clone(), or_dash(&n.node), n.failed_runs.to_string(), n.system_blamed.to_string()])
            .collect();
        table(&mut out, &["CLUSTER", "NODE", "FAILED RUNS", "SYSTEM"], &[false, false, true, true], &rows);
        let r = &self.retry_amplification;
        let _ = writeln!(out, "\nRetry amplification (jobs that ended in the window)");
        let rows = vec![vec![
            r.jobs.to_string(),
            r.runs.to_string(),
            format!("{:.2}", r.runs_per_job),
            r.max_runs.to_string(),
            r.retried_jobs.to_string(),
        ]];
        table(&mut out, &["JOBS", "RUNS", "RUNS/JOB", "MAX", "RETRIED"], &[true; 5], &rows);
        f.write_str(&out)
    }
}
