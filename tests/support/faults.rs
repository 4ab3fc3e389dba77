//! What the fault tests (`tests/faults_*.rs`) share: ids, seeds, witness messages, child specs, and the lock that
//! runs the tests touching the private services one at a time.

use std::time::Duration;

use super::broker::Broker;
use super::child::ChildSpec;
use super::events::*;
use super::stream::Keyed;

pub use super::events::T0;

/// Longest a test waits for the service to catch up.
pub const CATCH_UP: Duration = Duration::from_secs(180);

/// The tests that stop, kill or restart the private services run one at a time.
pub static PRIVATE_SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A short unique id for topic, subscription and job ids.
pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A random seed, printed so that a failing run can be repeated (`LI_TEST_SEED`).
pub fn seed() -> u64 {
    let seed = std::env::var("LI_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("[faults] seed {seed} (LI_TEST_SEED={seed} repeats it)");
    seed
}

/// A submit whose namespace holds a NUL byte (sanitized: `nul_removed`, original kept).
pub fn submit_with_nul_namespace(job: &str) -> lookout_ingester::proto::armadaevents::EventKind {
    let mut kind = submit_job(job, 1, None, &[]);
    if let lookout_ingester::proto::armadaevents::EventKind::SubmitJob(s) = &mut kind {
        s.object_meta.as_mut().expect("object meta").namespace = b("de\0fault");
    }
    kind
}

/// Poison among the stream: quarantined and sanitized rows are written once per delivery that commits, so a
/// message applied twice leaves two rows (see also `support::stream::witnessed`, which makes every message such a witness).
pub fn doubling_witnesses(tag: &str, n: usize) -> Vec<Keyed> {
    (0..n)
        .map(|i| {
            let job = format!("{tag}w{i:06}");
            match i % 3 {
                0 => ("garbage".to_string(), vec![0xff, 0xff, 0xff, 0x07, i as u8, 0x42]),
                1 => (
                    "witness".to_string(),
                    seq("research", "witness").at(T0 + i as i64, submit_with_nul_namespace(&job)).encode(),
                ),
                _ => {
                    let long_queue = "q".repeat(600);
                    (
                        "witness".to_string(),
                        seq(&long_queue, "witness").at(T0 + i as i64, submit_job(&job, 2, None, &[])).encode(),
                    )
                }
            }
        })
        .collect()
}

/// Inserts `extra` evenly among `messages`.
pub fn interleave(mut messages: Vec<Keyed>, extra: Vec<Keyed>) -> Vec<Keyed> {
    let step = messages.len() / (extra.len() + 1);
    for (k, m) in extra.into_iter().enumerate().rev() {
        messages.insert((k + 1) * step, m);
    }
    messages
}

pub fn child_spec(name: &str, db_url: &str, b: &Broker, topic: &str, subscription: &str, yaml: &str) -> ChildSpec {
    ChildSpec {
        name: name.to_string(),
        database_url: db_url.to_string(),
        pulsar_url: b.url.clone(),
        topic: topic.to_string(),
        subscription: subscription.to_string(),
        yaml: yaml.to_string(),
        log_level: "info".into(),
    }
}
