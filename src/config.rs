//! Configuration: one typed tree, layered from defaults, a YAML file, environment variables and flags.
//!
//! Precedence, lowest first: built-in defaults → YAML file (`--config`) → `LOOKOUT_INGESTER_*` variables
//! (nested keys joined by `__`, e.g. `LOOKOUT_INGESTER_PULSAR__RECEIVER_QUEUE_SIZE=500`) → the conventional
//! `DATABASE_URL` / `PULSAR_URL` → command-line flags.
//!
//! The YAML file may use Armada's lookout-ingester key names (`batchSize`, `pulsar.URL`,
//! `postgres.connection.host`, …): keys are normalised from camelCase to snake_case before they are read, so an
//! operator can point us at the file they already have. Keys of Armada's that we have no use for are accepted and
//! ignored (listed in [`IGNORED_ARMADA_KEYS`]); any other unknown key is an error, because a typo in a config key
//! must not silently fall back to a default (docs/compatibility.md D22).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};

/// Top-level keys of Armada's lookout-ingester configuration that this ingester accepts but does not use.
pub const IGNORED_ARMADA_KEYS: &[&str] =
    &["observability", "profiling", "fatal_insertion_errors", "pulsar_receive_timeout", "pulsar_backoff_time"];

/// Pulsar keys of Armada's shared Pulsar configuration that this ingester accepts but does not use.
pub const IGNORED_ARMADA_PULSAR_KEYS: &[&str] = &[
    "rest_url",
    "delay_monitor",
    "control_plane_events_topic",
    "metric_events_topic",
    "compression_type",
    "compression_level",
    "max_allowed_events_per_message",
    "max_allowed_message_size",
    "send_timeout",
    "backoff_time",
    "max_connections_per_broker",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub pulsar: PulsarConfig,
    /// Pulsar subscription name (Armada: `subscriptionName`).
    pub subscription_name: String,
    /// Where a new subscription starts reading: `earliest` (rebuilds from retained history) or `latest`.
    pub initial_position: InitialPosition,
    /// Maximum events per batch (Armada: `batchSize`).
    pub batch_size: usize,
    /// Maximum time a batch stays open after its first message (Armada: `batchDuration`).
    #[serde(with = "humantime_serde")]
    pub batch_duration: Duration,
    /// Maximum payload bytes per batch.
    pub batch_max_bytes: usize,
    /// Writer lanes: partitions are spread over this many batchers and writers, each storing its batches in its
    /// own transactions on its own connection, so a partitioned topic is written in parallel. A partition always
    /// goes to the same lane, so its order is kept. 1 writes everything through one connection.
    pub writers: usize,
    /// Blobs longer than this are compressed at level 1, shorter ones stored (level 0) (Armada:
    /// `minJobSpecCompressionSize`).
    pub min_job_spec_compression_size: usize,
    /// Deprecated Armada key; `annotations.user_annotation_prefix` wins when both are set.
    pub user_annotation_prefix: Option<String>,
    pub annotations: AnnotationsConfig,
    /// Cap on the database retry backoff, in seconds (Armada: `maxBackoff`).
    pub max_backoff: u64,
    /// Port of the HTTP server for `/metrics`, `/healthz` and `/readyz` (Armada: `metricsPort`).
    pub metrics_port: u16,
    /// Address the HTTP server binds to.
    pub metrics_bind: String,
    pub log: LogConfig,
    /// How long SIGTERM/SIGINT may take to drain the in-flight batch before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A job still active whose latest run ended longer ago than this counts as a zombie in the invariant gauge.
    #[serde(with = "humantime_serde")]
    pub zombie_threshold: Duration,
    /// How often the zombie gauge is recomputed (0 disables it).
    #[serde(with = "humantime_serde")]
    pub zombie_check_interval: Duration,
    /// How often parked events whose parent job or run exists by now are re-applied (0 disables it). Catches what
    /// the writers' own check after each commit could not (a crash between a commit and that check).
    #[serde(with = "humantime_serde")]
    pub parked_sweep_interval: Duration,
    /// Failure classification and periodic pruning (issue 10).
    pub analytics: crate::analytics::AnalyticsConfig,

    // Armada keys accepted for compatibility and ignored.
    #[serde(skip_serializing)]
    pub observability: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub profiling: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub fatal_insertion_errors: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub pulsar_receive_timeout: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub pulsar_backoff_time: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialPosition {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// A full connection URL (`DATABASE_URL`). When set it is the base; `connection` keys that are set override it.
    pub url: Option<String>,
    /// libpq-style keys, as in Armada's `postgres.connection` map.
    pub connection: ConnectionConfig,
    /// File holding the password (first line). Wins over `connection.password`.
    pub password_file: Option<PathBuf>,
    /// Connections in the pool (the writer uses one; readiness checks and the zombie gauge share the rest).
    pub pool_size: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// disable | allow | prefer | require | verify-ca | verify-full
    pub sslmode: Option<String>,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PulsarConfig {
    /// Broker service URL, `pulsar://host:6650` or `pulsar+ssl://host:6651` (`PULSAR_URL`; Armada: `pulsar.URL`).
    pub url: String,
    /// Topic to consume (Armada: `pulsar.jobsetEventsTopic`). Partitioned or not.
    pub jobset_events_topic: String,
    /// Flow permits / client queue size, in messages.
    pub receiver_queue_size: u32,
    /// Consumer name shown in topic stats; defaults to `lookout-ingester-<hostname>`.
    pub consumer_name: Option<String>,
    pub tls_enabled: bool,
    pub tls_trust_certs_file_path: Option<PathBuf>,
    pub tls_allow_insecure_connection: bool,
    pub tls_validate_hostname: bool,
    pub authentication_enabled: bool,
    /// Only `JWT` (token) is supported.
    pub authentication_type: Option<String>,
    pub jwt_token_path: Option<PathBuf>,
    /// A token given directly (e.g. from an environment variable); `jwt_token_path` wins when both are set.
    pub jwt_token: Option<String>,
    /// Idle watchdog (0 disables it; default 5m): rebuild the consumer when one of its partitions has delivered
    /// nothing for this long while the broker reports a backlog for the subscription, nothing of ours from that
    /// partition awaits commit, and this consumer is the partition's *active* consumer (or the broker lists no
    /// consumer there at all: ours is lost). That last point is asked of Pulsar's admin API
    /// (`subscriptions.<sub>.activeConsumerName` in the partition's stats, compared with `consumer_name`, so
    /// replicas need distinct consumer names; the default per-host name is) at `pulsar.rest_url` (Armada's
    /// `pulsar.restURL`), else `http://<service host>:8080`. On a Failover subscription shared by several replicas,
    /// the partitions another replica consumes are silent with a backlog here too; they never cause a rebuild. When
    /// the admin API cannot answer (unreachable, or `https://`, which is not supported), the watchdog logs a
    /// warning and does not rebuild.
    #[serde(with = "humantime_serde")]
    pub idle_rebuild_after: Duration,

    #[serde(skip_serializing)]
    pub rest_url: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub delay_monitor: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub control_plane_events_topic: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub metric_events_topic: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub compression_type: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub compression_level: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub max_allowed_events_per_message: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub max_allowed_message_size: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub send_timeout: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub backoff_time: Option<serde_json::Value>,
    #[serde(skip_serializing)]
    pub max_connections_per_broker: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AnnotationsConfig {
    /// Annotation keys (case-insensitive, before the prefix is stripped) that are never stored.
    pub blocklist_annotations: Vec<String>,
    /// Prefix stripped from annotation keys before they are stored. Unset: the deprecated top-level key, else
    /// [`DEFAULT_ANNOTATION_PREFIX`]. `""` keeps keys as they are.
    pub user_annotation_prefix: Option<String>,
}

/// Armada's shipped user annotation prefix (docs/compatibility.md §7.1).
pub const DEFAULT_ANNOTATION_PREFIX: &str = "armadaproject.io/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,lookout_ingester::store=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            postgres: PostgresConfig::default(),
            pulsar: PulsarConfig::default(),
            subscription_name: "lookout-ingester-v2".into(),
            initial_position: InitialPosition::Earliest,
            batch_size: 10_000,
            batch_duration: Duration::from_millis(500),
            batch_max_bytes: 32 * 1024 * 1024,
            writers: 2,
            min_job_spec_compression_size: 1024,
            user_annotation_prefix: None,
            annotations: AnnotationsConfig::default(),
            max_backoff: 60,
            metrics_port: 9002,
            metrics_bind: "0.0.0.0".into(),
            log: LogConfig::default(),
            shutdown_timeout: Duration::from_secs(25),
            zombie_threshold: Duration::from_secs(15 * 60),
            zombie_check_interval: Duration::from_secs(60),
            parked_sweep_interval: Duration::from_secs(30),
            analytics: Default::default(),
            observability: None,
            profiling: None,
            fatal_insertion_errors: None,
            pulsar_receive_timeout: None,
            pulsar_backoff_time: None,
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            connection: ConnectionConfig::default(),
            password_file: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for PulsarConfig {
    fn default() -> Self {
        PulsarConfig {
            url: "pulsar://localhost:6650".into(),
            jobset_events_topic: "events".into(),
            receiver_queue_size: 1000,
            consumer_name: None,
            tls_enabled: false,
            tls_trust_certs_file_path: None,
            tls_allow_insecure_connection: false,
            tls_validate_hostname: true,
            authentication_enabled: false,
            authentication_type: None,
            jwt_token_path: None,
            jwt_token: None,
            idle_rebuild_after: Duration::from_secs(5 * 60),
            rest_url: None,
            delay_monitor: None,
            control_plane_events_topic: None,
            metric_events_topic: None,
            compression_type: None,
            compression_level: None,
            max_allowed_events_per_message: None,
            max_allowed_message_size: None,
            send_timeout: None,
            backoff_time: None,
            max_connections_per_broker: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// Values given on the command line; each one, when present, wins over every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub pulsar_url: Option<String>,
    pub topic: Option<String>,
    pub subscription: Option<String>,
    pub log_format: Option<LogFormat>,
    pub metrics_port: Option<u16>,
}

const ENV_PREFIX: &str = "LOOKOUT_INGESTER_";

impl Config {
    /// Builds the effective configuration from every source, then validates it.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, overrides, &env)
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_from(file: Option<&Path>, overrides: &Overrides, env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
                .with_context(|| format!("config file {} is not valid YAML", path.display()))?;
            let json = normalise_keys(serde_json::to_value(yaml)?);
            if !json.is_null() {
                figment = figment.merge(Serialized::globals(json));
            }
        }
        let from_env = env_tree(env);
        if !from_env.as_object().is_some_and(|m| m.is_empty()) {
            figment = figment.merge(Serialized::globals(from_env));
        }
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if let Some(url) = lookup("DATABASE_URL").filter(|v| !v.is_empty()) {
            figment = figment.merge(Serialized::global("postgres.url", url));
        }
        if let Some(url) = lookup("PULSAR_URL").filter(|v| !v.is_empty()) {
            figment = figment.merge(Serialized::global("pulsar.url", url));
        }
        if let Some(v) = &overrides.database_url {
            figment = figment.merge(Serialized::global("postgres.url", v));
        }
        if let Some(v) = &overrides.pulsar_url {
            figment = figment.merge(Serialized::global("pulsar.url", v));
        }
        if let Some(v) = &overrides.topic {
            figment = figment.merge(Serialized::global("pulsar.jobset_events_topic", v));
        }
        if let Some(v) = &overrides.subscription {
            figment = figment.merge(Serialized::global("subscription_name", v));
        }
        if let Some(v) = overrides.log_format {
            figment = figment.merge(Serialized::global("log.format", v));
        }
        if let Some(v) = overrides.metrics_port {
            figment = figment.merge(Serialized::global("metrics_port", v));
        }
        let config: Config = figment.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that would make the service misbehave rather than fail (docs/compatibility.md D22).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.batch_size == 0 {
            bail!("invalid configuration: batch_size must be at least 1");
        }
        if self.batch_duration.is_zero() {
            bail!("invalid configuration: batch_duration must be greater than 0");
        }
        if !(1..=16).contains(&self.writers) {
            bail!("invalid configuration: writers must be between 1 and 16 (got {})", self.writers);
        }
        if self.batch_max_bytes < 1024 {
            bail!("invalid configuration: batch_max_bytes must be at least 1024");
        }
        if self.max_backoff == 0 {
            bail!("invalid configuration: max_backoff must be at least 1 (seconds)");
        }
        if self.postgres.pool_size < 2 {
            bail!("invalid configuration: postgres.pool_size must be at least 2");
        }
        if self.subscription_name.trim().is_empty() {
            bail!("invalid configuration: subscription_name must not be empty");
        }
        if self.pulsar.jobset_events_topic.trim().is_empty() {
            bail!("invalid configuration: pulsar.jobset_events_topic must not be empty");
        }
        if self.pulsar.receiver_queue_size == 0 {
            bail!("invalid configuration: pulsar.receiver_queue_size must be at least 1");
        }
        if !(self.pulsar.url.starts_with("pulsar://") || self.pulsar.url.starts_with("pulsar+ssl://")) {
            bail!(
                "invalid configuration: pulsar.url must start with pulsar:// or pulsar+ssl:// (got {:?})",
                self.pulsar.url
            );
        }
        if self.pulsar.authentication_enabled {
            match self.pulsar.authentication_type.as_deref() {
                Some(t) if t.eq_ignore_ascii_case("jwt") => {}
                other => bail!("invalid configuration: pulsar.authentication_type must be JWT (got {other:?})"),
            }
            if self.pulsar.jwt_token_path.is_none() && self.pulsar.jwt_token.is_none() {
                bail!("invalid configuration: pulsar authentication needs jwt_token_path or jwt_token");
            }
        }
        if let Some(mode) = &self.postgres.connection.sslmode {
            const MODES: &[&str] = &["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];
            if !MODES.contains(&mode.as_str()) {
                bail!("invalid configuration: postgres.connection.sslmode {mode:?} is not one of {MODES:?}");
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| anyhow::anyhow!("invalid configuration: log.level {:?}: {e}", self.log.level))?;
        Ok(())
    }

    /// The user annotation prefix, as Armada resolves it: `annotations.user_annotation_prefix` when set, else the
    /// deprecated top-level key, else [`DEFAULT_ANNOTATION_PREFIX`]. An empty value means no prefix.
    pub fn annotation_prefix(&self) -> Option<&str> {
        self.annotations
            .user_annotation_prefix
            .as_deref()
            .or(self.user_annotation_prefix.as_deref())
            .or(Some(DEFAULT_ANNOTATION_PREFIX))
            .filter(|p| !p.is_empty())
    }

    /// The effective configuration as YAML, with every secret replaced by `"***"`.
    pub fn to_masked_yaml(&self) -> anyhow::Result<String> {
        let mut masked = self.clone();
        if masked.postgres.connection.password.is_some() {
            masked.postgres.connection.password = Some("***".into());
        }
        if let Some(url) = &masked.postgres.url {
            masked.postgres.url = Some(mask_url_password(url));
        }
        if masked.pulsar.jwt_token.is_some() {
            masked.pulsar.jwt_token = Some("***".into());
        }
        Ok(serde_yaml::to_string(&masked)?)
    }

    /// The consumer name: the configured one, else `lookout-ingester-<hostname>`.
    pub fn consumer_name(&self) -> String {
        self.pulsar.consumer_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown".into());
            format!("lookout-ingester-{host}")
        })
    }
}

/// Replaces the password part of a URL's userinfo with `***`.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

/// Turns `LOOKOUT_INGESTER_A__B_C=v` variables into `{"a": {"b_c": v}}`; values are read as YAML scalars, so
/// numbers and booleans keep their type.
fn env_tree(env: &[(String, String)]) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            continue;
        }
        let parsed = serde_yaml::from_str::<serde_yaml::Value>(value)
            .ok()
            .filter(|v| !matches!(v, serde_yaml::Value::Mapping(_) | serde_yaml::Value::Null))
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or_else(|| serde_json::Value::String(value.clone()));
        let mut node = &mut root;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(part.clone(), parsed.clone());
            } else {
                let entry = node.entry(part.clone()).or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = serde_json::Value::Object(Default::default());
                }
                node = entry.as_object_mut().expect("just made an object");
            }
        }
    }
    serde_json::Value::Object(root)
}

/// Converts every object key from camelCase (Armada's style) to snake_case, recursively.
fn normalise_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().map(|(k, v)| (snake_case(&k), normalise_keys(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(normalise_keys).collect()),
        other => other,
    }
}

/// `jobsetEventsTopic` → `jobset_events_topic`, `URL` → `url`, `TLSTrustCertsFilePath` → `tls_trust_certs_file_path`.
/// Keys that are already snake_case are unchanged.
pub fn snake_case(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn snake_case_handles_armada_keys() {
        assert_eq!(snake_case("jobsetEventsTopic"), "jobset_events_topic");
        assert_eq!(snake_case("URL"), "url");
        assert_eq!(snake_case("TLSTrustCertsFilePath"), "tls_trust_certs_file_path");
        assert_eq!(snake_case("metricsPort"), "metrics_port");
        assert_eq!(snake_case("batch_size"), "batch_size");
        assert_eq!(snake_case("minJobSpecCompressionSize"), "min_job_spec_compression_size");
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::load_from(None, &Overrides::default(), &[]).unwrap();
        assert_eq!(c.batch_size, 10_000);
        assert_eq!(c.batch_duration, Duration::from_millis(500));
        assert_eq!(c.subscription_name, "lookout-ingester-v2");
        assert_eq!(c.pulsar.jobset_events_topic, "events");
        assert_eq!(c.metrics_port, 9002);
        assert_eq!(c.min_job_spec_compression_size, 1024);
        assert_eq!(c.initial_position, InitialPosition::Earliest);
        assert_eq!(c.annotation_prefix(), Some("armadaproject.io/"));
    }

    #[test]
    fn annotation_prefix_sources() {
        let f = write("annotations:\n  userAnnotationPrefix: \"corp.io/\"\n");
        assert_eq!(
            Config::load_from(Some(f.path()), &Overrides::default(), &[]).unwrap().annotation_prefix(),
            Some("corp.io/")
        );
        let f = write("userAnnotationPrefix: \"old.io/\"\n");
        assert_eq!(
            Config::load_from(Some(f.path()), &Overrides::default(), &[]).unwrap().annotation_prefix(),
            Some("old.io/")
        );
        let f = write("annotations:\n  userAnnotationPrefix: \"\"\n");
        assert_eq!(Config::load_from(Some(f.path()), &Overrides::default(), &[]).unwrap().annotation_prefix(), None);
    }

    #[test]
    fn reads_armada_config_file() {
        let f = write(
            "postgres:\n  connection:\n    host: db\n    port: 5433\n    user: postgres\n    password: psw\n    dbname: lookout\n    sslmode: disable\n\
             metricsPort: 9000\npulsar:\n  URL: \"pulsar://pulsar:6650\"\n  restURL: \"http://localhost:8090\"\n  jobsetEventsTopic: \"ev\"\n  backoffTime: 1s\n  receiverQueueSize: 100\n  delayMonitor:\n    enabled: false\n    interval: 30s\n\
             subscriptionName: \"sub\"\nbatchSize: 5000\nbatchDuration: 200ms\nminJobSpecCompressionSize: 2048\nuserAnnotationPrefix: \"armadaproject.io/\"\nmaxBackoff: 30\n",
        );
        let c = Config::load_from(Some(f.path()), &Overrides::default(), &[]).unwrap();
        assert_eq!(c.postgres.connection.host.as_deref(), Some("db"));
        assert_eq!(c.postgres.connection.port, Some(5433));
        assert_eq!(c.metrics_port, 9000);
        assert_eq!(c.pulsar.url, "pulsar://pulsar:6650");
        assert_eq!(c.pulsar.jobset_events_topic, "ev");
        assert_eq!(c.pulsar.receiver_queue_size, 100);
        assert_eq!(c.subscription_name, "sub");
        assert_eq!(c.batch_size, 5000);
        assert_eq!(c.batch_duration, Duration::from_millis(200));
        assert_eq!(c.min_job_spec_compression_size, 2048);
        assert_eq!(c.annotation_prefix(), Some("armadaproject.io/"));
        assert_eq!(c.max_backoff, 30);
    }

    #[test]
    fn unknown_key_is_an_error() {
        let f = write("batchSise: 10\n");
        let err = Config::load_from(Some(f.path()), &Overrides::default(), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("batch_sise"), "{err:#}");
    }

    #[test]
    fn invalid_values_are_refused() {
        let f = write("batchSize: 0\n");
        assert!(Config::load_from(Some(f.path()), &Overrides::default(), &[]).is_err());
        let f = write("maxBackoff: 0\n");
        assert!(Config::load_from(Some(f.path()), &Overrides::default(), &[]).is_err());
        let f = write("pulsar:\n  URL: http://x\n");
        assert!(Config::load_from(Some(f.path()), &Overrides::default(), &[]).is_err());
    }

    #[test]
    fn precedence_is_file_then_env_then_conventional_then_flags() {
        let f = write("batchSize: 100\npulsar:\n  URL: pulsar://file:6650\n");
        let env = vec![
            ("LOOKOUT_INGESTER_BATCH_SIZE".to_string(), "200".to_string()),
            ("PULSAR_URL".to_string(), "pulsar://env:6650".to_string()),
            ("DATABASE_URL".to_string(), "postgres://u:secret@h/db".to_string()),
        ];
        let c = Config::load_from(Some(f.path()), &Overrides::default(), &env).unwrap();
        assert_eq!(c.batch_size, 200);
        assert_eq!(c.pulsar.url, "pulsar://env:6650");
        assert_eq!(c.postgres.url.as_deref(), Some("postgres://u:secret@h/db"));
        let flags =
            Overrides { pulsar_url: Some("pulsar://flag:6650".into()), topic: Some("t2".into()), ..Default::default() };
        let c = Config::load_from(Some(f.path()), &flags, &env).unwrap();
        assert_eq!(c.pulsar.url, "pulsar://flag:6650");
        assert_eq!(c.pulsar.jobset_events_topic, "t2");
    }

    #[test]
    fn nested_env_keys_work() {
        let env = vec![("LOOKOUT_INGESTER_PULSAR__RECEIVER_QUEUE_SIZE".to_string(), "77".to_string())];
        let c = Config::load_from(None, &Overrides::default(), &env).unwrap();
        assert_eq!(c.pulsar.receiver_queue_size, 77);
    }

    #[test]
    fn secrets_are_masked() {
        let env = vec![("DATABASE_URL".to_string(), "postgres://u:secret@h:5432/db".to_string())];
        let mut c = Config::load_from(None, &Overrides::default(), &env).unwrap();
        c.postgres.connection.password = Some("hunter2".into());
        c.pulsar.jwt_token = Some("eyJtoken".into());
        let y = c.to_masked_yaml().unwrap();
        assert!(!y.contains("secret") && !y.contains("hunter2") && !y.contains("eyJtoken"), "{y}");
        assert!(y.contains("postgres://u:***@h:5432/db"), "{y}");
    }
}
