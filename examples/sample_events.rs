//! The sample stream (`lookout-ingester loadgen --profile short`), kept under its old name and flags for scripts:
//! each run gets new ids (the seed is the start time, default an hour ago).
//!
//! ```text
//! cargo run --example sample_events -- --jobs 100 --file events.bin        # delimited records, for `apply`
//! cargo run --example sample_events -- --jobs 100 --pulsar pulsar://127.0.0.1:6650 --topic events
//! cargo run --example sample_events -- --jobs 100 --count                  # how many events that is
//! ```

use clap::Parser;
use lookout_ingester::loadgen::cli::{Args, run};

#[derive(Parser)]
struct Flags {
    #[arg(long, default_value_t = 50)]
    jobs: usize,
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    #[arg(long)]
    pulsar: Option<String>,
    #[arg(long, default_value = "events")]
    topic: String,
    #[arg(long)]
    start: Option<i64>,
    #[arg(long)]
    count: bool,
}

#[derive(Parser)]
struct Loadgen {
    #[command(flatten)]
    args: Args,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let f = Flags::parse();
    let start = f.start.unwrap_or_else(|| chrono::Utc::now().timestamp() - 3600);
    let mut args = Loadgen::parse_from(["loadgen", "--profile", "short", "--topic", &f.topic]).args;
    args.jobs = Some(f.jobs);
    args.seed = start as u64;
    args.start = start;
    args.file = f.file;
    args.count = f.count;
    if !f.count && args.file.is_none() && f.pulsar.is_none() {
        anyhow::bail!("give one of --file PATH, --pulsar URL or --count");
    }
    run(&args, f.pulsar.as_deref().unwrap_or("pulsar://127.0.0.1:6650")).await
}
