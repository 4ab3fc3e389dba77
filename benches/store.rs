//! Store micro-benchmark (not a test): how fast `store` turns batches of a load-generator profile into committed
//! Lookout rows, next to the rate of a plain binary COPY of the same final rows into empty tables with the same
//! indexes, in the same run.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:55433/lookout cargo bench --bench store -- [--jobs 20000] [--batch 10000] [--profile short|long|storm]
//! ```
//! Prints events/s, rows/s (affected rows, and final rows), batch latency and peak RSS. The database named in
//! `DATABASE_URL` is only used to create and drop a scratch database.

use std::str::FromStr;
use std::time::{Duration, Instant};

use lookout_ingester::batch::{Batch, Builder, Limits};
use lookout_ingester::bench::{pg, sys};
use lookout_ingester::convert::Converter;
use lookout_ingester::decode::decode;
use lookout_ingester::loadgen::{DEFAULT_START, Profile, Size, Spec, generate};
use lookout_ingester::message::{MessageId, Position, RawMessage};
use lookout_ingester::writer::Writer;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs: usize = arg("--jobs").and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let batch_events: usize = arg("--batch").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let profile = match arg("--profile") {
        None => Profile::Short,
        Some(name) => <Profile as clap::ValueEnum>::from_str(&name, true)
            .map_err(|_| anyhow::anyhow!("unknown profile {name} (short, long or storm)"))?,
    };
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL (a role that can create databases)");
    let name = format!("li_bench_{}", std::process::id());
    let mut admin = PgConnection::connect(&admin_url).await?;
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
    let url = PgConnectOptions::from_str(&admin_url)?.database(&name);
    let pool = PgPool::connect_with(url.clone()).await?;
    lookout_ingester::migrate::migrate(&pool).await?;

    // Messages are encoded up front; each batch is decoded and converted just before it is stored (as the
    // pipeline does), and only the store is timed.
    let stream = generate(&Spec { profile, size: Size::Jobs(jobs), seed: 1, start: DEFAULT_START });
    let converter = Converter::default();
    let store = Writer::connect(url.clone(), converter.clone(), Some("bench".into()), Duration::from_secs(5)).await?;
    let cancel = CancellationToken::new();
    let mut builder =
        Builder::new(Limits { max_events: batch_events, max_bytes: usize::MAX, max_wait: Duration::MAX / 4 });
    let mut latencies = Vec::new();
    let mut affected = 0u64;
    let mut store_time = Duration::ZERO;
    let source: std::sync::Arc<str> = "bench".into();
    let count = stream.messages.len();
    for (i, m) in stream.messages.into_iter().enumerate() {
        let raw = RawMessage {
            position: Position { source: source.clone(), id: MessageId::new(0, i as i64, 0) },
            entry_size: 1,
            publish_time: 1_700_000_000_000_000,
            payload: m.payload.into(),
        };
        builder.push(decode(raw));
        if builder.is_full() || i + 1 == count {
            let batch: Batch = converter.convert_batch(builder.take());
            let t = Instant::now();
            let report = store.write(&batch, &cancel).await?;
            let took = t.elapsed();
            store_time += took;
            latencies.push(took);
            affected += report.rows.iter().map(|r| r.rows).sum::<u64>();
        }
    }
    let batches = latencies.len();
    latencies.sort();
    let copy = pg::copy_baseline(&pool, || None).await?;
    pool.close().await;
    drop(store);
    admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await?;

    let secs = store_time.as_secs_f64();
    let store_final = copy.rows as f64 / secs;
    let events = stream.events;
    println!(
        "store benchmark: profile {}, {} jobs, {events} events in {batches} batches of ≤{batch_events} events",
        profile.name(),
        stream.jobs
    );
    println!(
        "  store:  {:>9.0} events/s  {:>9.0} affected rows/s  {:>9.0} final rows/s  ({:.2} s)",
        events as f64 / secs,
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
        "  plain binary COPY of the same {} final rows into empty indexed tables: {:>9.0} rows/s ({:.2} s)",
        copy.rows, copy.rows_per_second, copy.seconds
    );
    println!("  ratio store / COPY (final rows per second): {:.2}", store_final / copy.rows_per_second);
    println!("  peak RSS: {:.0} MB", sys::peak_rss_mib(std::process::id()).unwrap_or(0.0));
    Ok(())
}
