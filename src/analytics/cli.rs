//! The `stats` and `prune` subcommands: their flags and what they print.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse_window;
use super::prune::{self, PruneOptions};
use super::stats::{self, StatsOptions};
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `stats`: failure summary for a time window.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Window ending now: failed runs that finished in it, jobs that ended in it (e.g. 24h, 7d, 90m).
    #[arg(long, default_value = "24h", value_parser = parse_window)]
    pub since: Duration,
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// `table` (default on a terminal) or `json` (default otherwise).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// How many job sets and nodes to list.
    #[arg(long, default_value_t = stats::TOP)]
    pub top: i64,
}

/// `prune`: delete terminal jobs older than the retention, with their runs, specs and errors.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Retention: terminal jobs whose last transition is older than this are deleted (e.g. 14d).
    #[arg(long, value_parser = parse_window)]
    pub older_than: Duration,
    /// Only count what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Jobs per transaction.
    #[arg(long, default_value_t = prune::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
}

pub async fn run_stats(config: &Config, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let pool = crate::db::pool(&config.postgres).await?;
    crate::migrate::ensure_current(&pool).await?;
    let opts = StatsOptions { since: args.since, queue: args.queue, top: args.top.max(1) };
    let s = stats::collect(&pool, &opts).await?;
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() { Format::Table } else { Format::Json });
    match format {
        Format::Table => print!("{s}"),
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_prune(config: &Config, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let pool = crate::db::pool(&config.postgres).await?;
    crate::migrate::ensure_current(&pool).await?;
    let opts = PruneOptions { older_than: args.older_than, batch_size: args.batch_size, dry_run: args.dry_run };
    let report = prune::prune(&pool, &opts, None, |p| {
        eprintln!(
            "batch {}: {} jobs, {} runs deleted so far ({:.0} jobs/s)",
            p.batches,
            p.deleted.jobs,
            p.deleted.runs,
            p.deleted.jobs as f64 / p.elapsed.as_secs_f64().max(1e-9)
        );
    })
    .await?;
    println!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}
