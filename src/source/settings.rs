//! Settings: everything the source needs from the configuration, checked once at start (topic name, TLS, token,
//! admin API URL).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, InitialPosition};

/// Where the JWT comes from; a file is read again at every use (each (re)connect, each admin API request), so a
/// rotated token is picked up.
#[derive(Clone, Debug)]
pub(super) enum Token {
    File(PathBuf),
    Value(String),
}

impl Token {
    /// The token now.
    pub(super) fn read(&self) -> anyhow::Result<String> {
        match self {
            Token::Value(t) => Ok(t.clone()),
            Token::File(path) => read_token(path),
        }
    }
}

/// Everything the source needs from the configuration, checked once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    /// Full topic name (`persistent://tenant/namespace/topic`).
    pub topic: String,
    pub subscription: String,
    pub consumer_name: String,
    pub initial_position: InitialPosition,
    pub receiver_queue_size: u32,
    pub(super) trust_certs: Option<PathBuf>,
    pub(super) allow_insecure: bool,
    pub(super) validate_hostname: bool,
    pub(super) token: Option<Token>,
    pub max_backoff: Duration,
    pub idle_rebuild_after: Duration,
    /// Pulsar's admin REST API (`http://host:port`), asked by the idle watchdog which consumer is active on a
    /// partition: `pulsar.rest_url` (Armada's `pulsar.restURL`), else the service URL's host on port 8080.
    pub admin_url: Option<String>,
    /// The CA the admin API's `https://` certificate is verified against (`pulsar.tls_trust_certs_file_path`,
    /// whether or not the service URL uses TLS).
    pub(super) admin_trust_certs: Option<PathBuf>,
}

impl Settings {
    /// Reads the Pulsar part of the configuration. Fails (a configuration error) when a trust-certificate or token
    /// file cannot be read.
    pub fn from_config(config: &Config) -> anyhow::Result<Settings> {
        let p = &config.pulsar;
        let tls = p.url.starts_with("pulsar+ssl://");
        if p.tls_enabled && !tls {
            tracing::warn!(url = %p.url, "pulsar.tls_enabled is set but pulsar.url is not pulsar+ssl://; connecting without TLS");
        }
        if tls && (p.tls_allow_insecure_connection || !p.tls_validate_hostname) {
            tracing::warn!(
                "pulsar.tls_allow_insecure_connection / tls_validate_hostname=false are not honoured by this build's \
                 TLS stack (rustls): the broker certificate and hostname are always verified; give the CA in \
                 pulsar.tls_trust_certs_file_path"
            );
        }
        let trust_certs = match &p.tls_trust_certs_file_path {
            Some(path) if tls => {
                std::fs::metadata(path).with_context(|| {
                    format!("invalid configuration: cannot read pulsar.tls_trust_certs_file_path {}", path.display())
                })?;
                Some(path.clone())
            }
            _ => None,
        };
        let token = if p.authentication_enabled {
            match (&p.jwt_token_path, &p.jwt_token) {
                (Some(path), _) => {
                    read_token(path).with_context(|| "invalid configuration: pulsar.jwt_token_path".to_string())?;
                    Some(Token::File(path.clone()))
                }
                (None, Some(token)) if !token.trim().is_empty() => Some(Token::Value(token.trim().to_string())),
                _ => anyhow::bail!("invalid configuration: pulsar authentication needs jwt_token_path or jwt_token"),
            }
        } else {
            None
        };
        Ok(Settings {
            url: p.url.clone(),
            topic: full_topic_name(&p.jobset_events_topic),
            subscription: config.subscription_name.clone(),
            consumer_name: config.consumer_name(),
            initial_position: config.initial_position,
            receiver_queue_size: p.receiver_queue_size.max(1),
            trust_certs,
            allow_insecure: p.tls_allow_insecure_connection,
            validate_hostname: p.tls_validate_hostname,
            token,
            max_backoff: Duration::from_secs(config.max_backoff.max(1)),
            idle_rebuild_after: p.idle_rebuild_after,
            admin_url: admin_url(p.rest_url.as_deref(), &p.url),
            admin_trust_certs: p.tls_trust_certs_file_path.clone(),
        })
    }

    pub(super) fn token(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.token.as_ref().map(|t| t.read().map(String::into_bytes)).transpose()
    }
}

/// The admin REST API's base URL: the configured one (trailing `/` removed), else derived from the service URL
/// (`pulsar://h:6650` → `http://h:8080`, `pulsar+ssl://h:6651` → `https://h:8443`, Pulsar's default ports).
fn admin_url(configured: Option<&str>, service_url: &str) -> Option<String> {
    if let Some(url) = configured.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.trim_end_matches('/').to_string());
    }
    let (scheme, port, rest) = if let Some(rest) = service_url.strip_prefix("pulsar+ssl://") {
        ("https", 8443, rest)
    } else {
        ("http", 8080, service_url.strip_prefix("pulsar://")?)
    };
    // The first host of `host:port[,host:port]/…`.
    let authority = rest.split(['/', ',']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| format!("{scheme}://{host}:{port}"))
}

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("{} is empty", path.display());
    }
    Ok(token.to_string())
}

/// `events` → `persistent://public/default/events`; `tenant/ns/t` → `persistent://tenant/ns/t`; full names stay.
/// Positions are stored under the full partition name, so `events` and its full form share one committed position.
pub fn full_topic_name(topic: &str) -> String {
    let topic = topic.trim();
    if topic.contains("://") {
        return topic.to_string();
    }
    match topic.matches('/').count() {
        0 => format!("persistent://public/default/{topic}"),
        2 => format!("persistent://{topic}"),
        _ => topic.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_made_full() {
        assert_eq!(full_topic_name("events"), "persistent://public/default/events");
        assert_eq!(full_topic_name("t/ns/events"), "persistent://t/ns/events");
        assert_eq!(full_topic_name("persistent://t/ns/events"), "persistent://t/ns/events");
        assert_eq!(full_topic_name("non-persistent://t/ns/x"), "non-persistent://t/ns/x");
    }

    #[test]
    fn the_admin_url_is_configured_or_derived_from_the_service_url() {
        assert_eq!(admin_url(Some("http://pulsar:8080/"), "pulsar://x:6650").as_deref(), Some("http://pulsar:8080"));
        assert_eq!(admin_url(None, "pulsar://pulsar:6650").as_deref(), Some("http://pulsar:8080"));
        assert_eq!(admin_url(Some(" "), "pulsar://127.0.0.1:6652").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(admin_url(None, "pulsar+ssl://b.example:6651").as_deref(), Some("https://b.example:8443"));
        assert_eq!(admin_url(None, "pulsar://a:6650,b:6650/").as_deref(), Some("http://a:8080"));
        assert_eq!(admin_url(None, "pulsar://broker").as_deref(), Some("http://broker:8080"));
        assert_eq!(admin_url(None, "http://nope"), None);
    }
}
