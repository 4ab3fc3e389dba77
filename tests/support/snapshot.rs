//! Snapshots of every table the ingester writes, compared exactly with what the `apply` path gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lookout_ingester::config::Config;
use lookout_ingester::convert::Converter;
use lookout_ingester::message::MessageId;
use sqlx::PgPool;

use super::db::TestDb;
use super::rows;

/// A quarantine row: `(reason, event_kind, job_id, payload)`.
pub type Quarantined = (String, Option<String>, Option<String>, Vec<u8>);
/// A sanitized value: `(field, fix, job_id, run_id, original)`.
pub type Sanitized = (String, String, Option<String>, Option<String>, Vec<u8>);
/// A parked event: `(waits_for, event_kind, job_id, run_id, event bytes)`.
pub type Parked = (String, String, String, Option<String>, Vec<u8>);

/// Every table the ingester writes, in a form that compares exactly between the service and the `apply` path
/// (positions and times of the bookkeeping rows left out: they differ between a topic and a file).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub jobs: Vec<rows::Job>,
    pub runs: Vec<rows::Run>,
    /// `(job_id, job_spec bytes)` — the stored blob, compressed or not.
    pub job_specs: Vec<(String, Vec<u8>)>,
    /// `(job_id, error blob)`.
    pub job_errors: Vec<(String, Vec<u8>)>,
    pub quarantine: Vec<Quarantined>,
    pub sanitized: Vec<Sanitized>,
    pub parked: Vec<Parked>,
}

impl Snapshot {
    pub async fn read(pool: &PgPool) -> Snapshot {
        let job_specs = sqlx::query_as("SELECT job_id, job_spec FROM job_spec ORDER BY job_id")
            .fetch_all(pool)
            .await
            .expect("job_spec");
        let job_errors = sqlx::query_as("SELECT job_id, error FROM job_error ORDER BY job_id")
            .fetch_all(pool)
            .await
            .expect("job_error");
        let quarantine = sqlx::query_as(
            "SELECT reason, event_kind, job_id, payload FROM lookout_ingester.quarantine
                            ORDER BY reason, event_kind, job_id, payload",
        )
        .fetch_all(pool)
        .await
        .expect("quarantine");
        let sanitized = sqlx::query_as(
            "SELECT field, fix, job_id, run_id, original FROM lookout_ingester.sanitized_value
                           ORDER BY field, fix, job_id, run_id, original",
        )
        .fetch_all(pool)
        .await
        .expect("sanitized");
        let parked = sqlx::query_as(
            "SELECT waits_for, event_kind, job_id, run_id, event FROM lookout_ingester.parked_event
                        ORDER BY waits_for, event_kind, job_id, run_id, event",
        )
        .fetch_all(pool)
        .await
        .expect("parked");
        Snapshot {
            jobs: rows::jobs(pool).await,
            runs: rows::runs(pool).await,
            job_specs,
            job_errors,
            quarantine,
            sanitized,
            parked,
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} jobs, {} runs, {} job_spec, {} job_error, {} quarantined, {} sanitized, {} parked",
            self.jobs.len(),
            self.runs.len(),
            self.job_specs.len(),
            self.job_errors.len(),
            self.quarantine.len(),
            self.sanitized.len(),
            self.parked.len()
        )
    }
}

/// Fails showing the first difference of each table.
pub fn assert_same(got: &Snapshot, want: &Snapshot) {
    if got == want {
        return;
    }
    fn first<T: PartialEq + std::fmt::Debug>(table: &str, got: &[T], want: &[T]) -> Option<String> {
        if got == want {
            return None;
        }
        let at = got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
        let show = |v: Option<&T>| v.map(|r| format!("{r:?}")).unwrap_or_else(|| "(none)".into());
        let cut = |s: String| if s.len() > 1500 { format!("{}…", &s[..1500]) } else { s };
        Some(format!(
            "{table}: {} rows, want {}; first difference at {at}:\n  got  {}\n  want {}",
            got.len(),
            want.len(),
            cut(show(got.get(at))),
            cut(show(want.get(at)))
        ))
    }
    let diffs: Vec<String> = [
        first("job", &got.jobs, &want.jobs),
        first("job_run", &got.runs, &want.runs),
        first("job_spec", &got.job_specs, &want.job_specs),
        first("job_error", &got.job_errors, &want.job_errors),
        first("quarantine", &got.quarantine, &want.quarantine),
        first("sanitized_value", &got.sanitized, &want.sanitized),
        first("parked_event", &got.parked, &want.parked),
    ]
    .into_iter()
    .flatten()
    .collect();
    panic!("tables differ from the reference:\n{}", diffs.join("\n"));
}

/// The tables the `apply` path (no Pulsar) gives for the same messages, in a fresh database: what the service must
/// end with. `batch_events` only changes how the file is cut into transactions, never the result.
pub async fn reference(messages: &[Vec<u8>], config: &Config, batch_events: usize) -> Snapshot {
    let db = TestDb::migrated().await;
    super::ingest::ingest_with(&db.url, messages, batch_events, Converter::from_config(config)).await;
    Snapshot::read(&db.pool).await
}

/// Committed positions (topic → message id) of a subscription.
pub async fn positions(pool: &PgPool, subscription: &str) -> BTreeMap<String, MessageId> {
    let rows: Vec<(String, i64, i64, i32)> = sqlx::query_as(
        "SELECT topic, ledger_id, entry_id, batch_index FROM lookout_ingester.consumer_position WHERE subscription = $1",
    )
    .bind(subscription)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.into_iter().map(|(t, l, e, b)| (t, MessageId::new(l, e, b))).collect()
}

pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
