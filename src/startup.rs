//! Startup: builds the running service from a [`Config`] and hands back an [`App`] to stop and await.
//!
//! [`App::build`] checks everything that can be wrong before any message is read, and fails with one clear line
//! when something is: the configuration (files it names), Postgres reachability, schema currency, the HTTP port.
//! Then it starts the HTTP server, the pipeline (source → batch → writer → acks) and the zombie gauge. Pulsar
//! being unreachable is not a start failure: the source keeps retrying and `/readyz` says so.
//!
//! [`App::wait`] returns when the service has stopped: after [`App::shutdown`] (or a signal, with
//! [`App::run_until_signal`]) it gives the pipeline `shutdown_timeout` to drain, then abandons what is left (an
//! uncommitted batch is not acknowledged, so it is delivered again later).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::{ConnectOptions, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::config::Config;
use crate::convert::Converter;
use crate::http::{self, AppState};
use crate::source::{self, Source, Subscription};
use crate::writer::Writer;
use crate::{db, metrics, pipeline};

/// How often the metrics recorder drains histogram samples.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

pub use crate::migrate::schema_current;

/// The running service.
pub struct App {
    http_addr: SocketAddr,
    status: Subscription,
    cancel: CancellationToken,
    shutdown_timeout: Duration,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl App {
    /// Checks the configuration, Postgres and the schema, then starts every task.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        config.validate()?;
        let settings = source::Settings::from_config(&config)?;

        let options = db::connect_options(&config.postgres)?;
        let target = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        // One direct connection first: its error says why (refused, auth, TLS), where a pool only says "timed out".
        match tokio::time::timeout(config.postgres.connect_timeout, options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => anyhow::bail!("cannot connect to Postgres at {target}: {e}"),
            Err(_) => anyhow::bail!(
                "cannot connect to Postgres at {target}: no answer within {:?}",
                config.postgres.connect_timeout
            ),
        }
        let pool = db::pool(&config.postgres).await.with_context(|| format!("Postgres at {target}"))?;
        schema_current(&pool).await.map_err(|reason| anyhow::anyhow!("database schema at {target}: {reason}"))?;

        let handle = metrics::install_once()?;
        let listener = http::bind(&config.metrics_bind, config.metrics_port).await?;
        let http_addr = listener.local_addr().context("HTTP listener has no address")?;

        let converter = Converter::from_config(&config);
        let writer = Arc::new(
            Writer::connect_lanes(
                options,
                converter.clone(),
                Some(config.subscription_name.clone()),
                Duration::from_secs(config.max_backoff),
                config.writers,
            )
            .await
            .context("cannot set up the Postgres writer")?
            .with_gap_guard(config.gap_accept_after)
            .with_known_jobs(config.known_jobs),
        );
        let limits = Limits {
            max_events: config.batch_size,
            max_bytes: config.batch_max_bytes,
            max_wait: config.batch_duration,
        };

        let cancel = CancellationToken::new();
        let status = Subscription::default();
        let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();

        let state = AppState { metrics: handle.clone(), pool: pool.clone(), status: status.clone() };
        tasks.spawn({
            let cancel = cancel.clone();
            async move { ("http", http::serve(listener, state, cancel).await) }
        });
        tasks.spawn({
            let cancel = cancel.clone();
            let source = Source::new(settings, status.clone());
            let writer = writer.clone();
            let lanes = config.writers;
            async move { ("pipeline", pipeline::run(source, converter, limits, writer, lanes, cancel).await) }
        });
        tasks.spawn({
            let (cancel, writer, interval) = (cancel.clone(), writer.clone(), config.parked_sweep_interval);
            async move {
                pipeline::parked_sweep(writer, interval, cancel).await;
                ("parked sweep", Ok(()))
            }
        });
        tasks.spawn({
            let (cancel, pool, analytics) = (cancel.clone(), pool.clone(), config.analytics.clone());
            async move {
                crate::analytics::prune::periodic(pool, analytics, cancel).await;
                ("periodic prune", Ok(()))
            }
        });
        tasks.spawn({
            let cancel = cancel.clone();
            let (interval, threshold) = (config.zombie_check_interval, config.zombie_threshold);
            async move {
                pipeline::zombie_gauge(pool, writer, interval, threshold, cancel).await;
                ("zombie gauge", Ok(()))
            }
        });
        tasks.spawn({
            let cancel = cancel.clone();
            async move {
                let mut tick = tokio::time::interval(METRICS_UPKEEP);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return ("metrics upkeep", Ok(())),
                        _ = tick.tick() => handle.run_upkeep(),
                    }
                }
            }
        });

        tracing::info!(http = %http_addr, "lookout-ingester started");
        Ok(App { http_addr, status, cancel, shutdown_timeout: config.shutdown_timeout, tasks })
    }

    /// The address `/metrics`, `/healthz` and `/readyz` are served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Whether the consumer is subscribed now.
    pub fn is_subscribed(&self) -> bool {
        self.status.is_subscribed()
    }

    /// A token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Asks the service to stop: stop consuming, drain, acknowledge what committed.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until the service has stopped. A task failing stops the others and is returned as the error. Once a
    /// shutdown is requested the drain gets `shutdown_timeout`; past it, whatever is still running is abandoned
    /// and the result is `Ok` (nothing uncommitted was acknowledged).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        loop {
            let joined = tokio::select! {
                j = self.tasks.join_next() => j,
                _ = self.cancel.cancelled() => break,
            };
            let Some(joined) = joined else { return Ok(()) };
            if let Some(e) = failure(joined) {
                first_error.get_or_insert(e);
                self.cancel.cancel();
                break;
            }
        }
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Some(e) = failure(joined) {
                    first_error.get_or_insert(e);
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "shutdown timeout: abandoning what is still running (an uncommitted batch is not acknowledged and \
                 will be delivered again)"
            );
            self.tasks.shutdown().await;
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }

    /// Runs until SIGTERM or SIGINT, then shuts down (see [`App::wait`]).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                signal = shutdown_signal() => {
                    tracing::info!(signal, "shutting down");
                    cancel.cancel();
                }
                _ = cancel.cancelled() => {}
            }
        });
        self.wait().await
    }
}

/// The error a finished task reports, if any.
fn failure(joined: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>) -> Option<anyhow::Error> {
    match joined {
        Ok((_, Ok(()))) => None,
        Ok((task, Err(e))) => Some(e.context(format!("{task} failed"))),
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some(anyhow::anyhow!("a task panicked: {e}")),
    }
}

/// Resolves on SIGTERM or SIGINT, with the signal's name.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
