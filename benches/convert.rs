//! Conversion micro-benchmark (not a test): the ingester's CPU per event for decoding and converting batches of a
//! load-generator profile, with no Pulsar and no Postgres — the part of the pipeline's CPU that is ours alone.
//!
//! ```text
//! cargo bench --bench convert -- [--jobs 20000] [--batch 20000] [--profile short|long|storm] [--rounds 7]
//! ```
//! Each round decodes every message into batches of `--batch` events and converts them (`Converter::convert_batch`);
//! prints the thread's CPU time per event for each round and their median.

use std::time::Duration;

use lookout_ingester::batch::{Builder, Limits};
use lookout_ingester::convert::Converter;
use lookout_ingester::decode::decode;
use lookout_ingester::loadgen::{DEFAULT_START, Profile, Size, Spec, generate};
use lookout_ingester::message::{MessageId, Position, RawMessage};

/// The service's allocator (`src/main.rs`): allocation is a large share of conversion, and glibc's costs differ.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() -> anyhow::Result<()> {
    let jobs: usize = arg("--jobs").and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let batch_events: usize = arg("--batch").and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(7);
    let profile = match arg("--profile") {
        None => Profile::Short,
        Some(name) => <Profile as clap::ValueEnum>::from_str(&name, true)
            .map_err(|_| anyhow::anyhow!("unknown profile {name} (short, long or storm)"))?,
    };
    let stream = generate(&Spec { profile, size: Size::Jobs(jobs), seed: 1, start: DEFAULT_START });
    let source: std::sync::Arc<str> = "bench".into();
    let raws: Vec<RawMessage> = stream
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| RawMessage {
            position: Position { source: source.clone(), id: MessageId::new(0, i as i64, 0) },
            entry_size: 1,
            publish_time: 1_700_000_000_000_000,
            payload: m.payload.into(),
        })
        .collect();
    let converter = Converter::default();
    let limits = Limits { max_events: batch_events, max_bytes: usize::MAX, max_wait: Duration::MAX / 4 };
    println!(
        "{profile:?}: {jobs} jobs, {} events, {} messages, batches of {batch_events} events",
        stream.events,
        raws.len()
    );

    let mut per_event = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut builder = Builder::new(limits);
        let mut rows = 0usize;
        let started = thread_cpu();
        for (i, raw) in raws.iter().enumerate() {
            builder.push(decode(raw.clone()));
            if builder.is_full() || i + 1 == raws.len() {
                let batch = converter.convert_batch(builder.take());
                rows += batch.changes.jobs.len() + batch.changes.runs.len();
            }
        }
        let us = (thread_cpu() - started).as_secs_f64() * 1e6 / stream.events as f64;
        println!("  round {round}: {us:.2} µs CPU per event ({rows} new rows)");
        per_event.push(us);
    }
    per_event.sort_by(f64::total_cmp);
    println!("median: {:.2} µs CPU per event (decode + convert)", per_event[per_event.len() / 2]);
    Ok(())
}
