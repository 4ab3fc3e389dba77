//! Watchdog: notices a consumer that stopped delivering (pulsar-rs #189 and relatives) or lost a partition
//! consumer, and decides whether to rebuild it; also keeps the subscribed status for `/readyz` current while idle.

use std::time::{Duration, Instant};

use super::acks::AckTracker;
use super::{CONNECTION_CHECK, Live, Source, TOPIC_REFRESH};

/// How long the watchdog waits for the admin API's answer about one partition.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Source {
    /// While idle (and not held back by a full pipeline, so the engines are not blocked handing us messages), asks
    /// every consumer engine for its connection. An engine busy reconnecting does not answer, and a partition
    /// consumer the multi-topic consumer dropped is missing: the consumer then counts as not subscribed for
    /// `/readyz` until all answer or it delivers again. Never rebuilds by itself.
    pub(super) async fn check_connection(&self, live: &mut Option<Live>) {
        let Some(l) = live.as_mut() else { return };
        if l.last_message.elapsed() < CONNECTION_CHECK || l.last_check.elapsed() < CONNECTION_CHECK {
            return;
        }
        l.last_check = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(3), l.consumer.connections()).await;
        let connected =
            matches!(answered, Ok(Ok(urls)) if !urls.is_empty()) && l.consumer.topics().len() >= l.partitions;
        if connected != self.status.is_subscribed() {
            if connected {
                tracing::info!("consumer connected again");
            } else {
                tracing::warn!("consumer not connected (reconnecting to the broker)");
            }
            self.status.set_subscribed(connected);
        }
    }

    /// Part of the watchdog (on when `idle_rebuild_after` is not 0): the multi-topic consumer drops a partition's
    /// consumer whose stream ends (a broker restart) and re-creates it at its next topic refresh, but its re-creation
    /// can fail for good (seen after a broker kill -9: both partitions gone, never back, nothing delivered, and
    /// nothing else notices because the merged stream does not end). Checked every tick; the consumer is rebuilt when
    /// a partition consumer has been missing for [`lost_grace`] of `idle_rebuild_after`.
    pub(super) fn partition_consumer_lost(&self, live: &mut Option<Live>) -> bool {
        let idle = self.settings.idle_rebuild_after;
        let Some(l) = live.as_mut() else { return false };
        let alive = l.consumer.consumer_id().len();
        if alive >= l.partitions {
            l.short_since = None;
            return false;
        }
        let since = *l.short_since.get_or_insert_with(Instant::now);
        if !lost_too_long(alive, l.partitions, since.elapsed(), idle) {
            return false;
        }
        tracing::warn!(
            alive, partitions = l.partitions, missing_for = ?since.elapsed(),
            "partition consumers lost and not re-created; rebuilding the consumer"
        );
        true
    }

    /// The idle watchdog (pulsar-rs #189 and relatives: a consumer, or one partition of it, can stop delivering
    /// after broker restarts). At most once per `idle_rebuild_after`, it looks at the partitions that delivered
    /// nothing for that long and have nothing of ours awaiting commit. If the broker reports a backlog on one of
    /// them, it asks the admin API which consumer is the partition's active one, and rebuilds only when it is this
    /// consumer ([`warrants_rebuild`]) and was already at the previous look: on a Failover subscription shared by
    /// several replicas, a partition another replica consumes is silent here with a backlog too, and one that has
    /// just become ours (the other replica stopped) is delivered after the broker's failover delay.
    /// It also rebuilds when the broker lists no consumer on the partition (ours is gone there). When the answer
    /// cannot be had (no admin API), it says so and does not rebuild. A consumer whose own stats request fails or
    /// times out is rebuilt.
    pub(super) async fn idle_and_stuck(&self, live: &mut Option<Live>, tracker: &AckTracker) -> bool {
        let idle = self.settings.idle_rebuild_after;
        let Some(l) = live.as_mut() else { return false };
        if idle.is_zero() || l.last_watch.elapsed() < idle || l.since.elapsed() < idle {
            return false;
        }
        l.last_watch = Instant::now();
        // The multi-topic consumer answers in the order of its partitions' names.
        let mut topics = l.consumer.topics();
        topics.sort();
        let quiet: Vec<bool> = topics
            .iter()
            .map(|t| l.delivered.get(t.as_str()).is_none_or(|at| at.elapsed() >= idle) && tracker.settled(t))
            .collect();
        for (topic, _) in topics.iter().zip(&quiet).filter(|(_, q)| !**q) {
            l.ours_since.remove(topic);
        }
        if !quiet.iter().any(|q| *q) {
            return false;
        }
        let stats = match tokio::time::timeout(Duration::from_secs(10), l.consumer.get_stats()).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer stats failed after an idle period");
                return true;
            }
            Err(_) => {
                tracing::warn!("consumer stats timed out after an idle period");
                return true;
            }
        };
        if stats.len() != topics.len() {
            return false;
        }
        for ((topic, stat), quiet) in topics.iter().zip(&stats).zip(quiet) {
            let backlog = stat.msg_backlog.unwrap_or(0);
            if !(quiet && backlog > 0) {
                continue;
            }
            let active = self.active_consumer(topic).await;
            if warrants_rebuild(quiet, backlog, &active) {
                // Silence counts from when the partition was first seen ours: just after a takeover the broker waits
                // (`activeConsumerFailoverDelayTimeMillis`) and rewinds before it delivers, and a rebuild then only
                // races its dispatch.
                let ours_since = *l.ours_since.entry(topic.clone()).or_insert_with(Instant::now);
                if ours_since.elapsed() < idle {
                    tracing::debug!(topic = %topic, backlog, "silent partition has just become ours; waiting");
                    continue;
                }
                tracing::warn!(
                    topic = %topic, backlog, idle = ?idle,
                    "partition delivers nothing to its active consumer (us) while the broker reports a backlog"
                );
                return true;
            }
            l.ours_since.remove(topic);
            match active {
                Active::Other(name) => tracing::debug!(
                    topic = %topic, backlog, active = %name, "silent partition is consumed by another consumer"
                ),
                Active::Unknown(why) => tracing::warn!(
                    topic = %topic, backlog, idle = ?idle, reason = %why,
                    "partition delivers nothing while the broker reports a backlog, but whether this consumer is its \
                     active consumer is unknown; not rebuilding"
                ),
                Active::Us | Active::Nobody => {}
            }
        }
        false
    }

    /// Which consumer the broker dispatches `topic` to on our subscription, from the admin API's topic stats.
    async fn active_consumer(&self, topic: &str) -> Active {
        let admin = match &self.admin {
            Ok(admin) => admin,
            Err(why) => return Active::Unknown(why.clone()),
        };
        match tokio::time::timeout(ADMIN_TIMEOUT, admin.stats(topic)).await {
            Ok(Ok(Some(stats))) => active_from_stats(&stats, &self.settings.subscription, &self.settings.consumer_name),
            Ok(Ok(None)) => Active::Unknown(format!("the stats of {topic}: HTTP 404")),
            Ok(Err(e)) => Active::Unknown(format!("{e:#}")),
            Err(_) => Active::Unknown(format!("the stats of {topic}: no answer within {ADMIN_TIMEOUT:?}")),
        }
    }
}

/// How long a partition consumer may be missing before the consumer is rebuilt: `idle_rebuild_after`, kept between
/// three topic refreshes (the multi-topic consumer's own chance to re-create it) and a minute.
fn lost_grace(idle: Duration) -> Duration {
    idle.clamp(3 * TOPIC_REFRESH, Duration::from_secs(60))
}

/// Whether `alive` of `partitions` partition consumers, short for `missing_for`, warrants a rebuild (never with the
/// watchdog off, `idle` 0).
fn lost_too_long(alive: usize, partitions: usize, missing_for: Duration, idle: Duration) -> bool {
    !idle.is_zero() && alive < partitions && missing_for >= lost_grace(idle)
}

/// Who the broker dispatches a partition to on our subscription (Failover: one active consumer per partition).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Active {
    /// This consumer (same consumer name).
    Us,
    /// No consumer at all, or no such subscription: the broker does not know the consumer we think we have.
    Nobody,
    /// Another consumer, e.g. another replica: silence here is normal.
    Other(String),
    /// Could not be found out, and why.
    Unknown(String),
}

/// The watchdog's decision for one partition: rebuild only when it delivered nothing for the idle period with
/// nothing of ours awaiting commit (`quiet`), the broker holds a backlog for the subscription, and this consumer
/// is the one the broker should be delivering it to.
fn warrants_rebuild(quiet: bool, backlog: u64, active: &Active) -> bool {
    quiet && backlog > 0 && matches!(active, Active::Us | Active::Nobody)
}

/// Reads `subscriptions.<subscription>.activeConsumerName` from a topic's stats (admin API JSON) and compares it
/// with our consumer name. Replicas must therefore have distinct consumer names (the default,
/// `lookout-ingester-<hostname>`, is).
fn active_from_stats(stats: &serde_json::Value, subscription: &str, consumer: &str) -> Active {
    let Some(subscriptions) = stats.get("subscriptions").and_then(|s| s.as_object()) else {
        return Active::Unknown("the answer has no subscriptions".into());
    };
    let Some(sub) = subscriptions.get(subscription) else { return Active::Nobody };
    let consumers = sub.get("consumers").and_then(|c| c.as_array()).map(Vec::len);
    match sub.get("activeConsumerName").and_then(|n| n.as_str()) {
        Some(name) if name == consumer => Active::Us,
        Some(name) => Active::Other(name.to_string()),
        None if consumers == Some(0) => Active::Nobody,
        None => Active::Unknown("the subscription stats name no active consumer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_rebuilds_only_for_a_silent_partition_it_is_the_active_consumer_of() {
        let (us, other) = (Active::Us, Active::Other("lookout-ingester-replica-b".into()));
        let unknown = Active::Unknown("admin API unreachable".into());
        // quiet, backlog, active → rebuild?
        let table = [
            (true, 3, &us, true),
            (true, 3, &Active::Nobody, true), // the broker has no consumer there: ours is lost
            (true, 3, &other, false),         // another replica owns it: silence is normal
            (true, 3, &unknown, false),
            (true, 0, &us, false),  // nothing to deliver
            (false, 3, &us, false), // delivered recently, or something of ours awaits commit
            (false, 0, &other, false),
        ];
        for (quiet, backlog, active, want) in table {
            assert_eq!(warrants_rebuild(quiet, backlog, active), want, "quiet {quiet}, backlog {backlog}, {active:?}");
        }
    }

    #[test]
    fn a_partition_consumer_missing_past_the_grace_rebuilds() {
        let (s, m) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(lost_grace(5 * s), 30 * s);
        assert_eq!(lost_grace(5 * m), m);
        assert!(!lost_too_long(1, 2, 29 * s, 5 * s), "within three topic refreshes");
        assert!(lost_too_long(1, 2, 30 * s, 5 * s));
        assert!(lost_too_long(0, 2, m, 5 * m));
        assert!(!lost_too_long(2, 2, 10 * m, 5 * m), "none missing");
        assert!(!lost_too_long(0, 2, 10 * m, Duration::ZERO), "watchdog off");
    }

    #[test]
    fn the_active_consumer_is_read_from_the_topic_stats() {
        // The shape of `GET /admin/v2/persistent/{tenant}/{ns}/{topic}/stats` (Pulsar 4.0), abridged.
        let stats: serde_json::Value = serde_json::from_str(
            r#"{"msgBacklog": 3, "subscriptions": {
                "lookout-ingester-v2": {"msgBacklog": 3, "type": "Failover",
                    "activeConsumerName": "lookout-ingester-a",
                    "consumers": [{"consumerName": "lookout-ingester-a"}, {"consumerName": "lookout-ingester-b"}]},
                "other-sub": {"msgBacklog": 0, "type": "Exclusive", "consumers": []}}}"#,
        )
        .unwrap();
        let sub = "lookout-ingester-v2";
        assert_eq!(active_from_stats(&stats, sub, "lookout-ingester-a"), Active::Us);
        assert_eq!(active_from_stats(&stats, sub, "lookout-ingester-b"), Active::Other("lookout-ingester-a".into()));
        assert_eq!(active_from_stats(&stats, "missing", "lookout-ingester-a"), Active::Nobody);
        assert_eq!(active_from_stats(&stats, "other-sub", "lookout-ingester-a"), Active::Nobody);
        let odd: serde_json::Value = serde_json::from_str(r#"{"subscriptions": {"s": {"consumers": [{}]}}}"#).unwrap();
        assert!(matches!(active_from_stats(&odd, "s", "a"), Active::Unknown(_)));
        assert!(matches!(active_from_stats(&serde_json::json!({"reason": "x"}), "s", "a"), Active::Unknown(_)));
    }
}
