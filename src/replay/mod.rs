//! `lookout-ingester replay` and `lookout-ingester rewind`: rebuilding tables from the topic, and making the live
//! service ingest a window again.
//!
//! * `replay` reads the topic with Pulsar readers ([`reader`], which says why they cannot disturb the live
//!   subscription) from the earliest message, a time or message ids, to each partition's last message as of the start
//!   ([`plan`]), through the service's own batch → convert → store stages (`pipeline::run_with`), so the tables it
//!   writes are the ones the service would. It records positions under a subscription name like the service, so a
//!   replay that stopped continues where it was when run again, and `--follow` hands over to live ingestion:
//!   it creates that durable subscription at the replay's end and runs the service on it ([`Replay::follow`]).
//! * `rewind` ([`rewind`]) resets the live subscription's cursor and clears the stored positions.
//!
//! Times and message ids are written as [`target`] says; [`admin`] holds the admin REST calls; [`progress`] the
//! bar, log lines and summary.

pub mod plan;
pub mod progress;
pub mod reader;
pub mod rewind;
pub mod target;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgPool};
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::config::{Config, PostgresConfig};
use crate::convert::Converter;
use crate::message::MessageId;
use crate::source::admin::Admin;
use crate::source::full_topic_name;
use crate::store::position;
use crate::writer::Writer;
use crate::{db, migrate, pipeline};
use progress::{Display, Reporter, Tally};
use target::{Target, parse_message_id, parse_time};

/// `lookout-ingester replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Topic to read (default: the configured `pulsar.jobset_events_topic`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Start at the first message published at or after this time: RFC 3339 (`2026-12-01T03:00:00Z`) or a
    /// duration ago (`2h`). Default: the earliest message the topic holds.
    #[arg(long, value_name = "TIME", conflicts_with = "from_message_id", value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Start at this message: `LEDGER:ENTRY[:PARTITION[:BATCH]]` (Pulsar's form) or `TOPIC@LEDGER:ENTRY[:BATCH]`
    /// (this service's logs and tables). On a partitioned topic give one per partition (repeat the flag).
    #[arg(long, value_name = "MESSAGE_ID", value_parser = parse_message_id)]
    pub from_message_id: Vec<target::MessageRef>,
    /// Keep going after the end: create the durable subscription (`--subscription`) at the replay's end and run the
    /// service on it (live ingestion into the same database) until SIGTERM. The subscription must not exist yet.
    #[arg(long)]
    pub follow: bool,
    /// Subscription name the positions are recorded under in the target database, and that `--follow` creates
    /// (default: the configured `subscription_name`).
    #[arg(long)]
    pub subscription: Option<String>,
    /// Create the target database (`--database-url`) if it does not exist, and apply the migrations.
    #[arg(long)]
    pub create_database: bool,
    /// Progress display: a bar on a terminal, log lines elsewhere (`auto`), or either.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Display,
    /// How often a progress log line is written.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub log_every: Duration,
    /// With `--follow`: the port of /metrics, /healthz and /readyz once live (default: `metrics_port`).
    #[arg(long)]
    pub metrics_port: Option<u16>,
}

/// `lookout-ingester rewind`.
#[derive(clap::Args, Debug, Clone)]
pub struct RewindArgs {
    /// Where to rewind to: a time (RFC 3339, or a duration ago such as `2h`; per partition, the first message
    /// published at or after it) or message ids (`LEDGER:ENTRY[:PARTITION[:BATCH]]` or `TOPIC@LEDGER:ENTRY[:BATCH]`,
    /// one per partition to move; repeat the flag).
    #[arg(long, value_name = "TIME|MESSAGE_ID", required = true)]
    pub to: Vec<String>,
    /// Topic (default: the configured `pulsar.jobset_events_topic`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Subscription to move back (default: the configured `subscription_name`).
    #[arg(long)]
    pub subscription: Option<String>,
    /// Show what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to watch the stored positions after the rewind for a writer still running.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

/// The database a replay writes: exactly `--database-url` when given (the configured `postgres.connection` keys
/// do not apply to it, so a replay can never land in the configured database by accident), else the configured one.
pub fn target_database(config: &Config, database_url: Option<&str>) -> PostgresConfig {
    match database_url {
        Some(url) => PostgresConfig {
            url: Some(url.to_string()),
            pool_size: config.postgres.pool_size,
            connect_timeout: config.postgres.connect_timeout,
            ..PostgresConfig::default()
        },
        None => config.postgres.clone(),
    }
}

/// Creates the database `options` names if it does not exist (connecting to the same server's `postgres`
/// database). Returns whether it was created.
pub async fn create_database(options: &PgConnectOptions) -> anyhow::Result<bool> {
    let name = options.get_database().context("the target database URL names no database")?.to_string();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("cannot connect to the server's postgres database to create {name}"))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        admin
            .execute(format!("CREATE DATABASE {quoted}").as_str())
            .await
            .with_context(|| format!("CREATE DATABASE {quoted}"))?;
    }
    let _ = admin.close().await;
    Ok(!exists)
}

/// A replay, set up and checked, ready to run.
pub struct Replay {
    pub config: Config,
    pub target: PostgresConfig,
    pub topic: String,
    pub subscription: String,
    pub windows: Vec<plan::Window>,
    admin: Admin,
    pool: PgPool,
}

impl Replay {
    /// Checks everything before reading: the target database (created and migrated with `--create-database`, else
    /// it must be current), the topic and its windows, and for `--follow` that the subscription does not exist.
    pub async fn prepare(args: &ReplayArgs, mut config: Config, database_url: Option<&str>) -> anyhow::Result<Replay> {
        if let Some(topic) = &args.topic {
            config.pulsar.jobset_events_topic = topic.clone();
        }
        config.validate()?;
        let topic = full_topic_name(&config.pulsar.jobset_events_topic);
        let subscription = args.subscription.clone().unwrap_or_else(|| config.subscription_name.clone());
        let target = target_database(&config, database_url);
        let options = db::connect_options(&target)?;
        let where_ = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        if args.create_database && create_database(&options).await? {
            tracing::info!(database = %where_, "created the database");
        }
        let pool = db::pool(&target).await.with_context(|| format!("Postgres at {where_}"))?;
        if args.create_database {
            let report = migrate::migrate(&pool).await?;
            tracing::debug!(database = %where_, "migrations: {report}");
            tracing::info!(database = %where_, "schema current");
        } else {
            migrate::ensure_current(&pool).await.map_err(|e| {
                anyhow::anyhow!("database {where_}: {e} (or pass --create-database to create and migrate it)")
            })?;
        }
        let admin = Admin::from_config(&config)?;
        let from = match (&args.from_time, args.from_message_id.is_empty()) {
            (Some(ms), _) => Some(Target::Time(*ms)),
            (None, false) => Some(Target::Ids(args.from_message_id.clone())),
            (None, true) => None,
        };
        if args.follow {
            for p in admin.partitions(&topic).await? {
                if admin.subscriptions(&p).await?.contains(&subscription) {
                    bail!(
                        "--follow creates subscription {subscription}, but it exists on {p} (a live ingester's?): \
                         name a new one with --subscription"
                    );
                }
            }
        }
        let windows = plan::plan(&admin, &topic, from.as_ref()).await?;
        tracing::info!(
            topic = %topic,
            database = %where_,
            subscription = %subscription,
            partitions = windows.len(),
            entries = windows.iter().map(|w| w.entries).sum::<Option<u64>>(),
            "replay planned"
        );
        Ok(Replay { config, target, topic, subscription, windows, admin, pool })
    }

    /// Reads every window through the stages until each partition's end has committed, or `stop` fires. Returns
    /// the final tally (its `complete` says which).
    pub async fn run(&self, display: Display, every: Duration, stop: CancellationToken) -> anyhow::Result<Tally> {
        let config = &self.config;
        let client = reader::client(config).await?;
        let converter = Converter::from_config(config);
        let writer = Writer::connect_lanes(
            db::connect_options(&self.target)?,
            converter.clone(),
            Some(self.subscription.clone()),
            Duration::from_secs(config.max_backoff),
            config.writers,
        )
        .await
        .context("cannot set up the Postgres writer")?;
        let limits = Limits {
            max_events: config.batch_size,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_duration,
        };
        let tally = Arc::new(Mutex::new(Tally::default()));
        let source =
            reader::ReaderSource::new(client, self.windows.clone(), tally.clone(), config.pulsar.receiver_queue_size);
        let reporter = Reporter::new(tally.clone(), display, every);
        let shown = CancellationToken::new();
        let result = tokio::join!(
            async {
                let r = pipeline::run_with(
                    |out, commits, cancel| source.run(out, commits, cancel),
                    converter,
                    limits,
                    Arc::new(writer),
                    config.writers,
                    stop.clone(),
                )
                .await;
                shown.cancel();
                r
            },
            reporter.run(shown.clone()),
        )
        .0;
        eprint!("{}", reporter.finish());
        result?;
        let t = tally.lock().expect("tally").clone();
        Ok(t)
    }

    /// The hand-over to live ingestion: records the end of every window as committed (so what lies before a
    /// window's start is not applied by the service either), creates the durable subscription on each partition at
    /// its last replayed entry (that entry is delivered again and skipped), and runs the service on it until SIGTERM.
    pub async fn follow(mut self, tally: &Tally, metrics_port: Option<u16>) -> anyhow::Result<()> {
        // The whole end entry (its batch index may be unknown).
        let ends: std::collections::HashMap<String, MessageId> = self
            .windows
            .iter()
            .filter_map(|w| Some((w.partition.clone(), w.end.map(|e| MessageId::new(e.ledger, e.entry, i32::MAX))?)))
            .collect();
        let topics: Vec<String> = ends.keys().cloned().collect();
        let mut tx = self.pool.begin().await?;
        position::lock(&mut tx, &self.subscription, &topics).await?;
        position::save(&mut tx, &self.subscription, &ends).await?;
        tx.commit().await?;
        for w in &self.windows {
            let committed = tally.positions.iter().find(|(p, _)| *p == w.partition).and_then(|(_, k)| *k);
            let at = committed.or(w.end).map(MessageId::entry_id);
            self.admin.create_subscription(&w.partition, &self.subscription, at).await?;
            tracing::info!(partition = %w.partition, subscription = %self.subscription, ?at, "durable subscription created");
        }
        self.config.postgres = self.target.clone();
        self.config.subscription_name = self.subscription.clone();
        if let Some(port) = metrics_port {
            self.config.metrics_port = port;
        }
        tracing::info!(subscription = %self.subscription, "caught up: handing over to live ingestion");
        let app = crate::startup::App::build(self.config).await?;
        app.run_until_signal().await
    }
}

/// `lookout-ingester replay`: prepares, runs, prints the summary; then `--follow` hands over.
pub async fn replay(args: ReplayArgs, config: Config, database_url: Option<String>) -> anyhow::Result<ExitCode> {
    let replay = Replay::prepare(&args, config, database_url.as_deref()).await?;
    let stop = CancellationToken::new();
    let signals = tokio::spawn({
        let stop = stop.clone();
        async move {
            let signal = crate::startup::shutdown_signal().await;
            tracing::warn!(signal, "stopping the replay (what committed stays; run it again to continue)");
            stop.cancel();
        }
    });
    let tally = replay.run(args.progress, args.log_every, stop).await;
    signals.abort();
    let tally = tally?;
    if !tally.complete {
        eprintln!(
            "replay interrupted; positions are recorded under subscription {}: the same command continues",
            replay.subscription
        );
        return Ok(ExitCode::from(130));
    }
    if args.follow {
        replay.follow(&tally, args.metrics_port).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `lookout-ingester rewind`.
pub async fn rewind(args: RewindArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    if let Some(topic) = &args.topic {
        config.pulsar.jobset_events_topic = topic.clone();
    }
    let topic = full_topic_name(&config.pulsar.jobset_events_topic);
    let subscription = args.subscription.clone().unwrap_or_else(|| config.subscription_name.clone());
    let target = target::parse_targets(&args.to).map_err(anyhow::Error::msg)?;
    let admin = Admin::from_config(&config)?;
    let plan = rewind::plan(&admin, &topic, &subscription, &target).await?;
    if args.dry_run {
        let partitions: Vec<String> = plan.moves.iter().map(|m| m.partition.clone()).collect();
        print!("(dry run) {}", rewind::render(&plan, &target, None));
        if let Err(e) = rewind::check_no_consumers(&admin, &partitions, &subscription).await {
            println!("it would refuse now: {e:#}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if plan.moves.is_empty() {
        print!("{}", rewind::render(&plan, &target, None));
        println!("nothing to rewind");
        return Ok(ExitCode::SUCCESS);
    }
    let pool = db::pool(&config.postgres).await?;
    migrate::ensure_current(&pool).await?;
    let moved = rewind::apply(&admin, &pool, &plan).await?;
    print!("{}", rewind::render(&plan, &target, Some(&moved)));
    rewind::verify(&pool, &plan, args.settle).await?;
    println!("done: start the service; it ingests the window again");
    Ok(ExitCode::SUCCESS)
}
