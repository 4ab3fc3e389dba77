//! Layering: defaults, the YAML file, `LOOKOUT_INGESTER_*` variables, `DATABASE_URL` / `PULSAR_URL` and flags,
//! merged with figment; Armada's camelCase keys are normalised to snake_case and its ignored keys dropped here,
//! before the typed structs (which refuse any other unknown key) are read.

use std::path::Path;

use anyhow::Context;
use figment::Figment;
use figment::providers::Serialized;

use super::{Config, Overrides, armada};

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
            let mut json = normalise_keys(serde_json::to_value(yaml)?);
            armada::drop_ignored(&mut json);
            if !json.is_null() {
                figment = figment.merge(Serialized::globals(json));
            }
        }
        let mut from_env = env_tree(env);
        armada::drop_ignored(&mut from_env);
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
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{load_yaml, yaml_file};

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
    fn reads_armada_config_file() {
        let c = load_yaml(
            "postgres:\n  connection:\n    host: db\n    port: 5433\n    user: postgres\n    password: psw\n    dbname: lookout\n    sslmode: disable\n\
             metricsPort: 9000\npulsar:\n  URL: \"pulsar://pulsar:6650\"\n  restURL: \"http://localhost:8090\"\n  jobsetEventsTopic: \"ev\"\n  backoffTime: 1s\n  receiverQueueSize: 100\n  delayMonitor:\n    enabled: false\n    interval: 30s\n\
             subscriptionName: \"sub\"\nbatchSize: 5000\nbatchDuration: 200ms\nminJobSpecCompressionSize: 2048\nuserAnnotationPrefix: \"armadaproject.io/\"\nmaxBackoff: 30\n",
        )
        .unwrap();
        assert_eq!(c.postgres.connection.host.as_deref(), Some("db"));
        assert_eq!(c.postgres.connection.port, Some(5433));
        assert_eq!(c.metrics_port, 9000);
        assert_eq!(c.pulsar.url, "pulsar://pulsar:6650");
        assert_eq!(c.pulsar.rest_url.as_deref(), Some("http://localhost:8090"));
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
        let err = load_yaml("batchSise: 10\n").unwrap_err();
        assert!(format!("{err:#}").contains("batch_sise"), "{err:#}");
    }

    #[test]
    fn precedence_is_file_then_env_then_conventional_then_flags() {
        let f = yaml_file("batchSize: 100\npulsar:\n  URL: pulsar://file:6650\n");
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
}
