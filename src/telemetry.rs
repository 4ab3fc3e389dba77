//! Logging: installs the `tracing` subscriber (text or JSON lines on stderr).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level. Postgres notices (such as
/// "relation already exists, skipping" while migrating) and the Pulsar client's routine "Retry #0" warnings on every
/// subscribe are hidden unless `RUST_LOG` asks for them. Colours only on a terminal.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx::postgres::notice=warn,pulsar::retry_op=error")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second call (tests) keeps the first subscriber.
    let _ = result;
}
