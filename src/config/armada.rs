//! Compatibility with Armada's lookout-ingester configuration: the keys of Armada's that this ingester accepts and
//! ignores, each spelled once, by section. [`drop_ignored`] removes them from a key tree (already normalised to
//! snake_case) before the typed structs read it, so those structs can refuse every other unknown key.

/// Top-level keys of Armada's lookout-ingester configuration that this ingester accepts but does not use.
pub const IGNORED_ARMADA_KEYS: &[&str] =
    &["observability", "profiling", "fatal_insertion_errors", "pulsar_receive_timeout", "pulsar_backoff_time"];

/// Pulsar keys of Armada's shared Pulsar configuration that this ingester accepts but does not use.
/// (`rest_url` is not one of them: it is read, see `PulsarConfig::rest_url`.)
pub const IGNORED_ARMADA_PULSAR_KEYS: &[&str] = &[
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

/// Every ignored key, by the section that holds it (`""` is the top level).
pub const IGNORED_BY_SECTION: &[(&str, &[&str])] = &[("", IGNORED_ARMADA_KEYS), ("pulsar", IGNORED_ARMADA_PULSAR_KEYS)];

/// Removes the ignored Armada keys from `tree` (a snake_case key tree from the YAML file or the environment),
/// whatever their values. Keys in any other place are left for the typed structs to accept or refuse.
pub fn drop_ignored(tree: &mut serde_json::Value) {
    for (section, keys) in IGNORED_BY_SECTION {
        let node = if section.is_empty() { Some(&mut *tree) } else { tree.get_mut(*section) };
        if let Some(map) = node.and_then(serde_json::Value::as_object_mut) {
            for key in *keys {
                map.remove(*key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::load_yaml;
    use crate::config::{Config, Overrides};

    /// `snake_case` → `snakeCase`, as Armada spells its keys.
    fn camel_case(key: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in key.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.push(c.to_ascii_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// A config file holding every ignored key, spelled as Armada does, each with a value of a different shape.
    fn every_ignored_key() -> String {
        let values = ["true", "30s", "{enabled: false, interval: 30s}", "[\"a\", \"b\"]", "7", "~"];
        let mut yaml = String::from("batchSize: 5000\n");
        for (i, key) in IGNORED_ARMADA_KEYS.iter().enumerate() {
            yaml.push_str(&format!("{}: {}\n", camel_case(key), values[i % values.len()]));
        }
        yaml.push_str("pulsar:\n  URL: \"pulsar://pulsar:6650\"\n");
        for (i, key) in IGNORED_ARMADA_PULSAR_KEYS.iter().enumerate() {
            yaml.push_str(&format!("  {}: {}\n", camel_case(key), values[i % values.len()]));
        }
        yaml
    }

    #[test]
    fn armada_config_with_every_ignored_key_loads() {
        let yaml = every_ignored_key();
        let c = load_yaml(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
        assert_eq!(c.batch_size, 5000);
        assert_eq!(c.pulsar.url, "pulsar://pulsar:6650");
        let defaults = Config::default();
        assert_eq!(c.pulsar.jobset_events_topic, defaults.pulsar.jobset_events_topic);
        // Ignored keys leave no trace in the effective configuration.
        let shown = c.to_masked_yaml().unwrap();
        for key in IGNORED_ARMADA_KEYS.iter().chain(IGNORED_ARMADA_PULSAR_KEYS) {
            assert!(!shown.contains(key), "{key} in\n{shown}");
        }
    }

    #[test]
    fn ignored_keys_are_accepted_from_the_environment_too() {
        let env = vec![
            ("LOOKOUT_INGESTER_PROFILING__PORT".to_string(), "6060".to_string()),
            ("LOOKOUT_INGESTER_PULSAR__BACKOFF_TIME".to_string(), "1s".to_string()),
        ];
        Config::load_from(None, &Overrides::default(), &env).unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (yaml, name) in [
            ("batchSise: 10\n", "batch_sise"),
            ("pulsar:\n  backofTime: 1s\n", "backof_time"),
            // An ignored key is ignored only in its own section.
            ("pulsar:\n  observability: {}\n", "observability"),
            ("delayMonitor:\n  enabled: false\n", "delay_monitor"),
            ("postgres:\n  sendTimeout: 1s\n", "send_timeout"),
        ] {
            let err = format!("{:#}", load_yaml(yaml).unwrap_err());
            assert!(err.contains(name), "{yaml}: {err}");
            assert_eq!(err.lines().count(), 1, "{yaml}: {err}");
        }
    }

    #[test]
    fn rest_url_is_read() {
        let c = load_yaml("pulsar:\n  restURL: \"http://admin:8090\"\n").unwrap();
        assert_eq!(c.pulsar.rest_url.as_deref(), Some("http://admin:8090"));
        let env = vec![("LOOKOUT_INGESTER_PULSAR__REST_URL".to_string(), "http://env:8080".to_string())];
        let c = Config::load_from(None, &Overrides::default(), &env).unwrap();
        assert_eq!(c.pulsar.rest_url.as_deref(), Some("http://env:8080"));
        assert!(c.to_masked_yaml().unwrap().contains("http://env:8080"));
    }
}
