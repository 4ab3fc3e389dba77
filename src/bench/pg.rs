//! The benchmark's PostgreSQL side: fresh databases, where the cluster's processes are, `pg_stat_statements` per
//! database, row counts, the visibility probes of the steady phase, and the plain binary COPY baseline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};

use super::sys;

/// The Lookout tables the benchmark counts and copies.
pub const TABLES: &[&str] = &["job", "job_spec", "job_run", "job_error"];

/// A connection to the cluster's maintenance database and what it offers.
pub struct Cluster {
    pub admin: PgConnection,
    pub options: PgConnectOptions,
    pub postmaster: Option<u32>,
    pub statements: bool,
}

impl Cluster {
    pub async fn connect(url: &str) -> Result<Cluster> {
        let options = PgConnectOptions::from_str(url).with_context(|| format!("bad Postgres URL {url}"))?;
        let mut admin = PgConnection::connect_with(&options).await.with_context(|| format!("connecting to {url}"))?;
        let data: Option<String> = sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            .fetch_optional(&mut admin)
            .await?;
        let local =
            matches!(options.get_host(), "127.0.0.1" | "localhost" | "::1") || options.get_host().starts_with('/');
        let postmaster = if local { data.and_then(|d| sys::postmaster_pid(&PathBuf::from(d))) } else { None };
        let preload: String =
            sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')").fetch_one(&mut admin).await?;
        let statements = preload.contains("pg_stat_statements")
            && admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await.is_ok();
        Ok(Cluster { admin, options, postmaster, statements })
    }

    /// CPU seconds of every process of the cluster so far (`None` when it is not local).
    pub fn cpu(&self) -> Option<f64> {
        self.postmaster.and_then(sys::cluster_cpu_seconds)
    }

    pub fn url_of(&self, database: &str) -> PgConnectOptions {
        self.options.clone().database(database)
    }

    pub async fn create(&mut self, database: &str) -> Result<PgConnectOptions> {
        self.admin.execute(format!("CREATE DATABASE {database}").as_str()).await?;
        Ok(self.url_of(database))
    }

    pub async fn drop(&mut self, database: &str) -> Result<()> {
        self.admin.execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str()).await?;
        Ok(())
    }

    /// Statement time in `database` by statement, most expensive first: (total ms, calls, query).
    pub async fn statements(&mut self, database: &str) -> Result<Vec<(f64, i64, String)>> {
        if !self.statements {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT total_exec_time, calls, query FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY total_exec_time DESC",
        )
        .bind(database)
        .fetch_all(&mut self.admin)
        .await?;
        Ok(rows.iter().map(|r| (r.get::<f64, _>(0), r.get::<i64, _>(1), r.get::<String, _>(2))).collect())
    }
}

/// A small pool on one database (the probes and counts).
pub async fn pool(options: &PgConnectOptions) -> Result<PgPool> {
    Ok(PgPoolOptions::new().max_connections(2).connect_with(options.clone()).await?)
}

/// Rows per Lookout table, and jobs per state.
pub async fn counts(pool: &PgPool) -> Result<(BTreeMap<String, i64>, BTreeMap<i16, i64>)> {
    let mut rows = BTreeMap::new();
    for t in TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(pool).await?;
        rows.insert(t.to_string(), n);
    }
    let states = sqlx::query("SELECT state, count(*) FROM job GROUP BY state").fetch_all(pool).await?;
    Ok((rows, states.iter().map(|r| (r.get::<i16, _>(0), r.get::<i64, _>(1))).collect()))
}

/// The state of each of these jobs that exists.
pub async fn states(pool: &PgPool, ids: &[&str]) -> Result<Vec<(String, i16)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query("SELECT job_id, state FROM job WHERE job_id = ANY($1)").bind(ids).fetch_all(pool).await?;
    Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<i16, _>(1))).collect())
}

/// `url` with its database replaced by `name` (user, password, host, port and parameters kept).
pub fn database_url(url: &str, name: &str) -> String {
    let (main, query) = url.split_once('?').map_or((url, String::new()), |(m, q)| (m, format!("?{q}")));
    let authority = main.find("://").map_or(0, |i| i + 3);
    let base = main[authority..].find('/').map_or(main, |i| &main[..authority + i]);
    format!("{base}/{name}{query}")
}

/// The plain binary COPY of a database's final Lookout rows into empty copies of its tables (same columns, indexes
/// and storage options), one transaction per table: how fast the final rows alone can be written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CopyBaseline {
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Postgres CPU seconds the COPY took (cluster-wide; `None` when the cluster is not local).
    pub postgres_cpu_seconds: Option<f64>,
}

pub async fn copy_baseline(pool: &PgPool, cluster_cpu: impl Fn() -> Option<f64>) -> Result<CopyBaseline> {
    let mut conn = pool.acquire().await?;
    let mut rows = 0u64;
    let mut exports: Vec<(&str, Vec<u8>)> = Vec::new();
    for t in TABLES {
        conn.execute(format!("CREATE TABLE copy_baseline_{t} (LIKE {t} INCLUDING ALL)").as_str()).await?;
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *conn).await?;
        rows += n as u64;
        let mut out = Vec::new();
        let mut copy = conn.copy_out_raw(&format!("COPY {t} TO STDOUT (FORMAT binary)")).await?;
        while let Some(chunk) = copy.next().await {
            out.extend_from_slice(&chunk?);
        }
        drop(copy);
        exports.push((*t, out));
    }
    let cpu0 = cluster_cpu();
    let started = Instant::now();
    for (t, data) in &exports {
        let mut tx = conn.begin().await?;
        let mut copy = tx.copy_in_raw(&format!("COPY copy_baseline_{t} FROM STDIN (FORMAT binary)")).await?;
        copy.send(data.as_slice()).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let the writes reach the WAL writer and background writer before reading the CPU.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let postgres_cpu_seconds = match (cpu0, cluster_cpu()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    for t in TABLES {
        conn.execute(format!("DROP TABLE copy_baseline_{t}").as_str()).await?;
    }
    Ok(CopyBaseline { rows, seconds, rows_per_second: rows as f64 / seconds, postgres_cpu_seconds })
}
