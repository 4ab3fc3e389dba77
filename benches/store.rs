//! Store micro-benchmark (not a test): how fast `store` turns 10k-event batches into committed Lookout rows, next to
//! the rate of a plain binary COPY of the same final rows into empty tables with the same indexes, in the same run.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:55433/lookout cargo bench --bench store -- [--jobs 20000] [--batch 10000]
//! ```
//! Prints events/s, rows/s (affected rows, and final rows), batch latency and peak RSS. The database named in
//! `DATABASE_URL` is only used to create and drop a scratch database.

#[path = "../tests/support/events.rs"]
#[allow(dead_code)]
mod events;

use std::str::FromStr;
use std::time::{Duration, Instant};

use events::*;
use lookout_ingester::batch::Batch;
use lookout_ingester::batch::{Builder, Limits};
use lookout_ingester::convert::Converter;
use lookout_ingester::decode::decode;
use lookout_ingester::message::{Position, RawMessage};
use lookout_ingester::proto::armadaevents::EventKind;
use lookout_ingester::writer::Writer;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One job's life as the scheduler and executors publish it: submit, lease, assigned, running, then an ending.
fn job_events(i: usize, t0: i64) -> Vec<EventKind> {
    let job = format!("01bench{i:0>24}");
    let run = format!("00000000-0000-4000-8000-{i:0>12}");
    let node = format!("node-{}", i % 50);
    let mut out = vec![
        submit_job(
            &job,
            1,
            Some(pod(&[("cpu", "1"), ("memory", "2Gi")], Some("armada-default"))),
            &[("armadaproject.io/team", "bench")],
        ),
        leased(&job, &run, "cluster-1", &node, "default"),
        assigned(&job, &run),
        running(&job, &run, Some(&node)),
    ];
    if i.is_multiple_of(10) {
        let e = error(true, pod_error("OOMKilled", &node, &[137], "debug text"), "oom", "container-limit");
        out.push(run_errors(&job, &run, vec![e.clone()]));
        out.push(job_errors(&job, vec![e]));
    } else {
        out.push(run_succeeded(&job, &run));
        out.push(job_succeeded(&job));
    }
    let _ = t0;
    out
}

/// Messages in publish order: each job's events spread over time, jobs interleaved, ~5 events per message.
fn messages(jobs: usize) -> Vec<Vec<u8>> {
    let t0 = 1_700_000_000;
    let mut timed: Vec<(i64, usize, EventKind)> = Vec::new();
    for i in 0..jobs {
        for (k, e) in job_events(i, t0).into_iter().enumerate() {
            timed.push((t0 + (i as i64 / 100) + 10 * k as i64, i, e));
        }
    }
    timed.sort_by_key(|(t, i, _)| (*t, *i));
    timed
        .chunks(5)
        .map(|chunk| {
            let mut s = seq("bench-queue", "bench-set");
            for (t, _, e) in chunk {
                s = s.at(*t, e.clone());
            }
            s.encode()
        })
        .collect()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

const TABLES: &[&str] = &["job", "job_spec", "job_run", "job_error"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = arg("--jobs", 20_000);
    let batch_events = arg("--batch", 10_000);
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL (a role that can create databases)");
    let name = format!("li_bench_{}", std::process::id());
    let mut admin = PgConnection::connect(&admin_url).await?;
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    let url = {
        let mut o = PgConnectOptions::from_str(&admin_url)?;
        o = o.database(&name);
        o
    };
    let pool = PgPool::connect_with(url.clone()).await?;
    lookout_ingester::migrate::migrate(&pool).await?;

    // Messages are encoded up front; each batch is decoded and converted just before it is stored (as the
    // pipeline does), and only the store is timed.
    let msgs = messages(jobs);
    let converter = Converter::default();
    let store = Writer::connect(url.clone(), converter.clone(), Some("bench".into()), Duration::from_secs(5)).await?;
    let cancel = CancellationToken::new();
    let mut builder =
        Builder::new(Limits { max_events: batch_events, max_bytes: usize::MAX, max_wait: Duration::MAX / 4 });
    let mut latencies = Vec::new();
    let mut affected = 0u64;
    let mut total_events = 0usize;
    let mut store_time = Duration::ZERO;
    let source: std::sync::Arc<str> = "bench".into();
    let count = msgs.len();
    for (i, payload) in msgs.into_iter().enumerate() {
        let raw = RawMessage {
            position: Position { source: source.clone(), ledger_id: 0, entry_id: i as i64, batch_index: 0 },
            entry_size: 1,
            publish_time: 1_700_000_000_000_000,
            payload: payload.into(),
        };
        let m = decode(raw);
        total_events += m.event_count();
        builder.push(m);
        if builder.is_full() || i + 1 == count {
            let batch: Batch = converter.convert_batch(builder.take());
            let t = Instant::now();
            let report = store.write(&batch, &cancel).await?;
            let took = t.elapsed();
            store_time += took;
            latencies.push(took);
            affected += report.rows.iter().map(|(_, _, n)| n).sum::<u64>();
        }
    }
    let batches = latencies.len();
    latencies.sort();

    // Baseline: the same final rows, exported with binary COPY, then COPYed into empty copies of the tables (same
    // columns, indexes and storage options), one transaction per table.
    let mut conn = pool.acquire().await?;
    let mut final_rows = 0u64;
    for t in TABLES {
        conn.execute(format!("CREATE TABLE bench_{t} (LIKE {t} INCLUDING ALL)").as_str()).await?;
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *conn).await?;
        final_rows += n as u64;
    }
    let mut exports: Vec<(String, Vec<u8>)> = Vec::new();
    for t in TABLES {
        let mut out = Vec::new();
        let mut copy = conn.copy_out_raw(&format!("COPY {t} TO STDOUT (FORMAT binary)")).await?;
        use futures::StreamExt;
        while let Some(chunk) = copy.next().await {
            out.extend_from_slice(&chunk?);
        }
        exports.push((t.to_string(), out));
    }
    let copy_started = Instant::now();
    for (t, data) in &exports {
        let mut tx = conn.begin().await?;
        let mut copy = tx.copy_in_raw(&format!("COPY bench_{t} FROM STDIN (FORMAT binary)")).await?;
        copy.send(data.as_slice()).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    let copy_time = copy_started.elapsed();
    drop(conn);
    pool.close().await;
    drop(store);
    admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await?;

    let secs = store_time.as_secs_f64();
    let store_final = final_rows as f64 / secs;
    let copy_final = final_rows as f64 / copy_time.as_secs_f64();
    println!("store benchmark: {jobs} jobs, {total_events} events in {batches} batches of ≤{batch_events} events");
    println!(
        "  store:  {:>9.0} events/s  {:>9.0} affected rows/s  {:>9.0} final rows/s  ({:.2} s)",
        total_events as f64 / secs,
        affected as f64 / secs,
        store_final,
        secs
    );
    println!(
        "  batch latency: p50 {:?}  p95 {:?}  max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().unwrap()
    );
    println!(
        "  plain binary COPY of the same {final_rows} final rows into empty indexed tables: {copy_final:>9.0} rows/s ({:.2} s)",
        copy_time.as_secs_f64()
    );
    println!("  ratio store / COPY (final rows per second): {:.2}", store_final / copy_final);
    println!("  peak RSS: {:.0} MB", peak_rss_mb());
    Ok(())
}
