//! The `loadgen` subcommand: generate a profile's stream and publish it to Pulsar (optionally creating the
//! partitioned topic first), write it to a file in the delimited form `apply` reads, or just count it.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::publish::{Options, Publisher};
use super::topic::Topic;
use super::{DEFAULT_START, Profile, Size, Spec, generate};
use crate::source::admin::Admin;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Workload profile: short (sample stream), long (realistic lifecycles), storm (a node pool failing).
    #[arg(long, value_enum, default_value = "short")]
    pub profile: Profile,
    /// Number of jobs (whole lives).
    #[arg(long, conflicts_with = "events")]
    pub jobs: Option<usize>,
    /// At least this many events (whole job lives; default 10 000 when --jobs is not given).
    #[arg(long)]
    pub events: Option<usize>,
    /// Seed: the same seed, size, profile and start give the same stream, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Event time of the first job, in Unix seconds (default 2026-01-01T00:00:00Z).
    #[arg(long, default_value_t = DEFAULT_START)]
    pub start: i64,
    /// Write the stream to this file (varint-delimited EventSequence records, for `apply`) instead of publishing.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print the stream's size and outcome mix, publish nothing.
    #[arg(long)]
    pub count: bool,
    /// Topic to publish to (NAME or persistent://TENANT/NAMESPACE/NAME).
    #[arg(long, default_value = "events")]
    pub topic: String,
    /// Number of partitions of the topic (0: a non-partitioned topic; default: asked from the admin API, or 1 with
    /// --create-topic).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Create the partitioned topic through the admin API first (an existing one with as many partitions is fine).
    #[arg(long)]
    pub create_topic: bool,
    /// Pulsar admin URL (for --create-topic).
    #[arg(long, env = "PULSAR_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    pub admin_url: String,
    /// Target rate in events per second (default: as fast as possible).
    #[arg(long)]
    pub rate: Option<f64>,
}

impl Args {
    pub fn spec(&self) -> Spec {
        let size = match (self.jobs, self.events) {
            (Some(j), _) => Size::Jobs(j),
            (None, Some(e)) => Size::Events(e),
            (None, None) => Size::Events(10_000),
        };
        Spec { profile: self.profile, size, seed: self.seed, start: self.start }
    }
}

/// Runs `loadgen`; `pulsar_url` is the service URL from the configuration.
pub async fn run(args: &Args, pulsar_url: &str) -> Result<()> {
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be a positive number of events per second");
    }
    let spec = args.spec();
    let stream = generate(&spec);
    let mix: Vec<String> = stream.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "{}: {} jobs, {} events in {} messages, seed {} ({})",
        spec.profile.name(),
        stream.jobs,
        stream.events,
        stream.messages.len(),
        spec.seed,
        mix.join(", ")
    );
    if args.count {
        println!("{}", stream.events);
        return Ok(());
    }
    if let Some(path) = &args.file {
        let payloads = stream.payloads();
        std::fs::write(path, super::events::delimited(&payloads))?;
        eprintln!("wrote {} messages to {}", payloads.len(), path.display());
        return Ok(());
    }
    let topic = Topic::parse(&args.topic)?;
    let admin = Admin::new(&args.admin_url);
    let partitions = match (args.partitions, args.create_topic) {
        (Some(n), _) => n,
        (None, true) => 1,
        (None, false) => admin.partition_count(&topic.full()).await?,
    };
    if args.create_topic {
        admin.create_partitioned(&topic.full(), partitions).await?;
    }
    let mut publisher = Publisher::connect(pulsar_url, &topic, partitions).await?;
    let report =
        publisher.publish(&stream.messages, &Options { rate: args.rate, progress: true, notify: None }).await?;
    eprintln!("{}", report.summary(&topic.full()));
    Ok(())
}
