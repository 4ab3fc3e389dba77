//! Command-line entry point: parses flags, loads the configuration and dispatches to a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lookout_ingester::config::{Config, LogFormat, Overrides};

/// jemalloc instead of glibc's malloc: a batch allocates and frees hundreds of thousands of small strings, and
/// glibc's allocator spent about a quarter of the ingester's CPU on them (perf, `short` drain). Measured on that
/// drain (README, Performance): glibc, mimalloc and jemalloc; jemalloc used the least CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: one arena. Batches are built on one worker thread and freed on another; with an arena per
/// thread the freed memory stayed cached in the first one, and the peak RSS of a drain was ~10% higher.
/// (`_RJEM_MALLOC_CONF` in the environment still overrides this.)
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static [u8; 10]> = Some(b"narenas:1\0");

#[derive(Parser, Debug)]
#[command(name = "lookout-ingester", version, about = "Armada job events (Pulsar) → Lookout database (PostgreSQL)")]
struct Cli {
    /// YAML configuration file (Armada's lookout-ingester keys are accepted).
    #[arg(long, short = 'c', global = true, env = "LOOKOUT_INGESTER_CONFIG")]
    config: Option<PathBuf>,
    /// Postgres URL; wins over the config file and DATABASE_URL.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Pulsar service URL; wins over the config file and PULSAR_URL.
    #[arg(long, global = true)]
    pulsar_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume the job-set events topic and keep the Lookout database current (the service).
    Run {
        /// Topic to consume (default `events`).
        #[arg(long)]
        topic: Option<String>,
        /// Subscription name (default `lookout-ingester-v2`).
        #[arg(long)]
        subscription: Option<String>,
        /// Port for /metrics, /healthz and /readyz (default 9002).
        #[arg(long)]
        metrics_port: Option<u16>,
    },
    /// Apply pending schema migrations (`migrate status` lists them without applying).
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Decode, convert and store recorded messages from files (varint-delimited EventSequence records), without
    /// Pulsar.
    Apply {
        /// Files to apply, in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rebuild tables from the topic (Pulsar readers; the live subscription is not touched), into the configured
    /// database or `--database-url`; `--follow` then hands over to live ingestion.
    Replay(lookout_ingester::replay::ReplayArgs),
    /// Move the subscription back to a time or message ids and clear the stored positions, so the service ingests
    /// that window again (every replica must be stopped).
    Rewind(lookout_ingester::replay::RewindArgs),
    /// Print the effective configuration (secrets masked) and exit.
    Config,
    /// Failure summary for a time window: by category and blame, top job sets and nodes, runs per job.
    Stats(lookout_ingester::analytics::cli::StatsArgs),
    /// Delete terminal jobs older than the retention, with their runs, specs and errors, in batches.
    Prune(lookout_ingester::analytics::cli::PruneArgs),
    /// Generate an Armada event stream (a workload profile) and publish it to Pulsar or write it to a file.
    Loadgen(lookout_ingester::loadgen::cli::Args),
    /// Benchmark the service on a profile's backlog and steady load (optionally beside Armada's ingester).
    Bench(lookout_ingester::bench::Args),
}

#[derive(Subcommand, Debug)]
enum MigrateAction {
    /// List applied and pending migrations with their checksums.
    Status,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?} (text or json)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Loadgen(_) | Command::Bench(_) = &cli.command {
        return tools(cli);
    }
    let mut overrides = Overrides {
        database_url: cli.database_url.clone(),
        pulsar_url: cli.pulsar_url.clone(),
        log_format: cli.log_format,
        ..Default::default()
    };
    if let Command::Run { topic, subscription, metrics_port } = &cli.command {
        overrides.topic = topic.clone();
        overrides.subscription = subscription.clone();
        overrides.metrics_port = *metrics_port;
    }
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lookout-ingester: {e:#}");
            return ExitCode::from(2);
        }
    };
    lookout_ingester::telemetry::init(config.log.format, &config.log.level);
    let mut builder = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lookout-ingester: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command, config, cli.database_url));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lookout-ingester: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `loadgen` and `bench`: tools that drive Pulsar and Postgres themselves, without the service's configuration.
fn tools(cli: Cli) -> ExitCode {
    lookout_ingester::telemetry::init(cli.log_format.unwrap_or(LogFormat::Text), "warn,pulsar=error");
    let pulsar_url =
        cli.pulsar_url.or_else(|| std::env::var("PULSAR_URL").ok()).unwrap_or_else(|| "pulsar://127.0.0.1:6650".into());
    let result = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async move {
            match cli.command {
                Command::Loadgen(args) => lookout_ingester::loadgen::cli::run(&args, &pulsar_url).await,
                Command::Bench(args) => lookout_ingester::bench::run(args, &pulsar_url, cli.database_url).await,
                _ => unreachable!("only tools are dispatched here"),
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lookout-ingester: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config, database_url: Option<String>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Replay(args) => lookout_ingester::replay::replay(args, config, database_url).await,
        Command::Rewind(args) => lookout_ingester::replay::rewind(args, config).await,
        Command::Config => {
            print!("{}", config.to_masked_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { action } => {
            use lookout_ingester::migrate;
            let pool = lookout_ingester::db::pool(&config.postgres).await?;
            match action {
                None => {
                    let report = migrate::migrate(&pool).await?;
                    println!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Some(MigrateAction::Status) => {
                    let status = migrate::status(&pool).await?;
                    println!("{status}");
                    // Behind is a normal state (run `migrate`); diverged needs a human.
                    Ok(if status.health() == migrate::Health::Diverged { ExitCode::FAILURE } else { ExitCode::SUCCESS })
                }
            }
        }
        Command::Apply { files } => {
            let pool = lookout_ingester::db::pool(&config.postgres).await?;
            lookout_ingester::migrate::ensure_current(&pool).await?;
            let store = lookout_ingester::writer::Writer::connect(
                lookout_ingester::db::connect_options(&config.postgres)?,
                lookout_ingester::convert::Converter::from_config(&config),
                None,
                std::time::Duration::from_secs(config.max_backoff),
            )
            .await?
            .with_max_attempts(10);
            let summary = lookout_ingester::apply::apply_files(&store, &files, config.batch_size).await?;
            print!("{}", summary.render());
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats(args) => lookout_ingester::analytics::cli::run_stats(&config, args).await,
        Command::Prune(args) => lookout_ingester::analytics::cli::run_prune(&config, args).await,
        Command::Loadgen(_) | Command::Bench(_) => unreachable!("dispatched by tools()"),
        Command::Run { .. } => {
            let app = lookout_ingester::startup::App::build(config).await?;
            app.run_until_signal().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
