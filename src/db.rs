//! Postgres connections: turns the configuration into connect options and a pool.
//!
//! Every session the ingester opens runs with `TimeZone=UTC` (timestamps are UTC wall-clock in
//! `timestamp without time zone` columns, docs/compatibility.md §5.6) and `jit=off` (ingest statements are short; a JIT compile
//! would only add latency).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, PgPool};

use crate::config::PostgresConfig;

/// Connect options from `postgres.url` (if any), then the `postgres.connection` keys, then the password file.
pub fn connect_options(cfg: &PostgresConfig) -> anyhow::Result<PgConnectOptions> {
    let mut opts = match &cfg.url {
        Some(url) => PgConnectOptions::from_str(url).context("postgres.url is not a valid Postgres URL")?,
        None => PgConnectOptions::new_without_pgpass(),
    };
    let c = &cfg.connection;
    if let Some(v) = &c.host {
        opts = opts.host(v);
    }
    if let Some(v) = c.port {
        opts = opts.port(v);
    }
    if let Some(v) = &c.user {
        opts = opts.username(v);
    }
    if let Some(v) = &c.password {
        opts = opts.password(v);
    }
    if let Some(v) = &c.dbname {
        opts = opts.database(v);
    }
    if let Some(v) = &c.sslmode {
        opts = opts.ssl_mode(PgSslMode::from_str(v).with_context(|| format!("bad sslmode {v:?}"))?);
    }
    if let Some(v) = &c.sslrootcert {
        opts = opts.ssl_root_cert(v);
    }
    if let Some(v) = &c.sslcert {
        opts = opts.ssl_client_cert(v);
    }
    if let Some(v) = &c.sslkey {
        opts = opts.ssl_client_key(v);
    }
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read postgres.password_file {}", path.display()))?;
        opts = opts.password(text.lines().next().unwrap_or("").trim_end());
    }
    let app = c.application_name.clone().unwrap_or_else(|| "lookout-ingester".into());
    Ok(opts
        .application_name(&app)
        .options([("TimeZone", "UTC"), ("jit", "off")])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(5)))
}

/// A pool of `pool_size` connections; fails fast (within `connect_timeout`) if Postgres is unreachable.
pub async fn pool(cfg: &PostgresConfig) -> anyhow::Result<PgPool> {
    let opts = connect_options(cfg)?;
    PgPoolOptions::new()
        .max_connections(cfg.pool_size)
        .acquire_timeout(cfg.connect_timeout)
        .connect_with(opts)
        .await
        .context("cannot connect to Postgres")
}

/// A pool that connects on first use (for commands that must start even while Postgres is down).
pub fn lazy_pool(cfg: &PostgresConfig) -> anyhow::Result<PgPool> {
    let opts = connect_options(cfg)?;
    Ok(PgPoolOptions::new().max_connections(cfg.pool_size).acquire_timeout(cfg.connect_timeout).connect_lazy_with(opts))
}
