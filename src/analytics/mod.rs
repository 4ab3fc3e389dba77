//! Failure analytics and retention over the Lookout tables (issue 10): the ingester-side failure classification
//! ([`classify`], opt-in), the `stats` failure summary ([`stats`]) and the `prune` retention ([`prune`]). The
//! indexes, the failure taxonomy and the views these read are created by migrations V1003 and V1004; the questions
//! operators ask, with their SQL, are in docs/queries.md.

pub mod classify;
pub mod cli;
pub mod prune;
pub mod stats;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `analytics` configuration keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// When a terminal run error carries no failure category, derive one from the error itself (lease expired,
    /// lease returned, preempted, OOM, rejected, max runs exceeded, …) and mark it
    /// `job_run.ingester_category_source = 'ingester'`. Off by default, so the rows match Armada's.
    pub classify_failures: bool,
    /// How often the service itself prunes (0: never, the default).
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Retention of the periodic prune: terminal jobs whose last transition is older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub prune_older_than: Duration,
    /// Jobs deleted per transaction by the periodic prune.
    pub prune_batch_size: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            classify_failures: false,
            prune_interval: Duration::ZERO,
            prune_older_than: Duration::from_secs(14 * 24 * 3600),
            prune_batch_size: prune::DEFAULT_BATCH_SIZE,
        }
    }
}

/// Parses a window such as `24h`, `14d`, `90m` or `1week` (humantime's syntax).
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 24h or 14d: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: the duration must be greater than zero"));
    }
    Ok(d)
}
