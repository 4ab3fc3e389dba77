//! Checks of values that would make the service misbehave rather than fail (docs/compatibility.md D22).

use anyhow::bail;

use super::Config;

impl Config {
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
}

#[cfg(test)]
mod tests {
    use crate::config::testing::load_yaml;

    #[test]
    fn invalid_values_are_refused() {
        assert!(load_yaml("batchSize: 0\n").is_err());
        assert!(load_yaml("maxBackoff: 0\n").is_err());
        assert!(load_yaml("pulsar:\n  URL: http://x\n").is_err());
    }
}
