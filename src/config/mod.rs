//! Configuration: one typed tree, layered from defaults, a YAML file, environment variables and flags.
//!
//! Precedence, lowest first: built-in defaults → YAML file (`--config`) → `LOOKOUT_INGESTER_*` variables
//! (nested keys joined by `__`, e.g. `LOOKOUT_INGESTER_PULSAR__RECEIVER_QUEUE_SIZE=500`) → the conventional
//! `DATABASE_URL` / `PULSAR_URL` → command-line flags.
//!
//! The YAML file may use Armada's lookout-ingester key names (`batchSize`, `pulsar.URL`,
//! `postgres.connection.host`, …): keys are normalised from camelCase to snake_case before they are read, so an
//! operator can point us at the file they already have. Keys of Armada's that we have no use for are accepted and
//! ignored (listed once, in [`armada`]); any other unknown key is an error, because a typo in a config key must not
//! silently fall back to a default (docs/compatibility.md D22).
//!
//! This module owns the types and their defaults; [`load`] the layering, [`validate`] the checks of values,
//! [`armada`] the compatibility keys.

pub mod armada;
pub mod load;
pub mod validate;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use armada::{IGNORED_ARMADA_KEYS, IGNORED_ARMADA_PULSAR_KEYS};
pub use load::snake_case;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub postgres: PostgresConfig,
    pub pulsar: PulsarConfig,
    /// Pulsar subscription name (Armada: `subscriptionName`).
    pub subscription_name: String,
    /// Where a new subscription starts reading: `earliest` (rebuilds from retained history) or `latest`.
    pub initial_position: InitialPosition,
    /// Maximum events per batch (Armada: `batchSize`, default 10000). Ours defaults to 20000: a converted batch
    /// keeps only its raw bytes and row changes, so memory allows it, and on long job lives a larger batch writes
    /// more rows once, in their final form (README "Performance").
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
    /// Threads of the async runtime: 0 (default) one per CPU; 1 runs every stage on one thread (no hand-offs between
    /// threads; conversion runs on the blocking pool either way); more, that many.
    pub worker_threads: usize,
    /// Active jobs whose stored columns the writer remembers (it wrote them last), so that their updates are merged
    /// in memory and written by compare-and-set instead of read back by the guarded merge (`writer::known`). A few
    /// hundred bytes each; ended jobs are dropped; 0 turns it off.
    pub known_jobs: usize,
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
    /// How long a gap in a partition's delivery (messages that do not continue the committed position) is held
    /// back, the partition delivered again, before the gap is accepted and what follows written. 0 turns the check
    /// off (for topics whose ledgers hold entries the broker never dispatches, such as replicated-subscription or
    /// transaction markers, where every marker would look like a gap). See `writer::gaps`.
    #[serde(with = "humantime_serde")]
    pub gap_accept_after: Duration,
    /// Failure classification and periodic pruning (issue 10).
    pub analytics: crate::analytics::AnalyticsConfig,
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

    /// Base URL of Pulsar's admin REST API (Armada: `pulsar.restURL`), used by the idle watchdog and by `replay`;
    /// unset, it is derived from `url` (`pulsar://h:6650` → `http://h:8080`).
    pub rest_url: Option<String>,
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
            batch_size: 20_000,
            batch_duration: Duration::from_millis(500),
            batch_max_bytes: 32 * 1024 * 1024,
            writers: 2,
            worker_threads: 0,
            known_jobs: crate::writer::known::DEFAULT_CAPACITY,
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
            gap_accept_after: crate::writer::gaps::ACCEPT_AFTER,
            analytics: Default::default(),
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

impl Config {
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

#[cfg(test)]
pub(crate) mod testing {
    use super::{Config, Overrides};

    /// A temporary file holding `text`.
    pub(crate) fn yaml_file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    /// Loads `text` as the config file, with no environment and no flags.
    pub(crate) fn load_yaml(text: &str) -> anyhow::Result<Config> {
        let f = yaml_file(text);
        Config::load_from(Some(f.path()), &Overrides::default(), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::testing::load_yaml;
    use super::*;

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::load_from(None, &Overrides::default(), &[]).unwrap();
        assert_eq!(c.batch_size, 20_000);
        assert_eq!(c.batch_duration, Duration::from_millis(500));
        assert_eq!(c.subscription_name, "lookout-ingester-v2");
        assert_eq!(c.pulsar.jobset_events_topic, "events");
        assert_eq!(c.metrics_port, 9002);
        assert_eq!(c.min_job_spec_compression_size, 1024);
        assert_eq!(c.initial_position, InitialPosition::Earliest);
        assert_eq!(c.annotation_prefix(), Some("armadaproject.io/"));
        assert_eq!(c.pulsar.rest_url, None);
    }

    #[test]
    fn annotation_prefix_sources() {
        let c = load_yaml("annotations:\n  userAnnotationPrefix: \"corp.io/\"\n").unwrap();
        assert_eq!(c.annotation_prefix(), Some("corp.io/"));
        let c = load_yaml("userAnnotationPrefix: \"old.io/\"\n").unwrap();
        assert_eq!(c.annotation_prefix(), Some("old.io/"));
        let c = load_yaml("annotations:\n  userAnnotationPrefix: \"\"\n").unwrap();
        assert_eq!(c.annotation_prefix(), None);
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
