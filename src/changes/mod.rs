//! Row changes: what `convert` produces from a batch of events and `store` writes in one transaction.
//!
//! Creates are plain rows (inserted only if their key is new). Updates are *deltas*, one per job and one per run,
//! folded here from all of the batch's events for that key, in arrival order, with the precedence rules of
//! `docs/precedence.md`. The store merges each delta with the stored row by the same rules, in SQL, so folding a
//! batch and merging it gives the same rows as applying its events one at a time.
//!
//! Files: `job` (the job delta), `run` (the run delta); rows, dead letters, sanitized values and [`RowChanges`]
//! are here.

use std::collections::BTreeMap;

use crate::message::{EventId, Ts};

/// Job states as column values (the codes of [`JobState`]).
pub mod job_state {
    use crate::states::JobState;

    pub const QUEUED: i16 = JobState::Queued.code();
    pub const PENDING: i16 = JobState::Pending.code();
    pub const RUNNING: i16 = JobState::Running.code();
    pub const SUCCEEDED: i16 = JobState::Succeeded.code();
    pub const FAILED: i16 = JobState::Failed.code();
    pub const CANCELLED: i16 = JobState::Cancelled.code();
    pub const PREEMPTED: i16 = JobState::Preempted.code();
    pub const LEASED: i16 = JobState::Leased.code();
    pub const REJECTED: i16 = JobState::Rejected.code();

    pub fn is_terminal(state: i16) -> bool {
        JobState::from_code(state).is_some_and(JobState::is_terminal)
    }
}

/// Run states as column values (the codes of [`RunState`]).
pub mod run_state {
    use crate::states::RunState;

    pub const PENDING: i16 = RunState::Pending.code();
    pub const RUNNING: i16 = RunState::Running.code();
    pub const SUCCEEDED: i16 = RunState::Succeeded.code();
    pub const FAILED: i16 = RunState::Failed.code();
    pub const PREEMPTED: i16 = RunState::Preempted.code();
    pub const LEASE_RETURNED: i16 = RunState::LeaseReturned.code();
    pub const LEASE_EXPIRED: i16 = RunState::LeaseExpired.code();
    pub const LEASED: i16 = RunState::Leased.code();
    pub const CANCELLED: i16 = RunState::Cancelled.code();

    pub fn is_ended(state: i16) -> bool {
        RunState::from_code(state).is_some_and(RunState::is_ended)
    }

    /// Rank of an active state: LEASED < PENDING < RUNNING.
    pub fn active_rank(state: i16) -> i16 {
        RunState::from_code(state).map_or(-1, RunState::active_rank)
    }
}

pub use crate::states::{JobState, RunState};

/// A job's progress phase within a run (docs/precedence.md, job rule 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum JobPhase {
    Leased = 1,
    Pending = 2,
    Running = 3,
    Requeued = 4,
}

impl JobPhase {
    /// The job state this phase puts the job in.
    pub fn state(self) -> i16 {
        match self {
            JobPhase::Leased => job_state::LEASED,
            JobPhase::Pending => job_state::PENDING,
            JobPhase::Running => job_state::RUNNING,
            JobPhase::Requeued => job_state::QUEUED,
        }
    }
}

/// A new `job` row (from `SubmitJob`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub job_id: String,
    pub queue: String,
    pub owner: String,
    pub jobset: String,
    pub cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub gpu: i64,
    pub priority: i64,
    pub submitted: Ts,
    pub priority_class: Option<String>,
    pub namespace: String,
    /// JSON object text.
    pub annotations: String,
    pub external_job_uri: String,
}

/// A new `job_spec` row: the zlib-compressed `api.Job`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpecRow {
    pub job_id: String,
    pub spec: Vec<u8>,
}

/// A new `job_error` row (rejections): the zlib-compressed message.
#[derive(Clone, Debug, PartialEq)]
pub struct JobErrorRow {
    pub job_id: String,
    pub error: Vec<u8>,
    pub source: EventId,
}

/// A new `job_run` row (from `JobRunLeased`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub job_id: String,
    pub cluster: String,
    pub node: Option<String>,
    pub leased: Ts,
    pub pool: Option<String>,
    pub source: EventId,
}

mod job;
pub mod known;
mod run;
pub mod settle;

pub use job::{JobDelta, JobFailure, Preempted, Progress, Terminal};
pub use run::{RunDelta, RunEnd};

/// Why a message or event was quarantined (the `reason` column, and the `reason` label of the metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuarantineReason {
    /// The bytes are not an `EventSequence`.
    Undecodable,
    EmptyQueue,
    EmptyJobSet,
    NoEvents,
    /// A job or run id that cannot be stored (too long, or not text).
    InvalidId,
    /// Postgres rejected the event's rows (isolated by bisection).
    DbRejected,
}

impl QuarantineReason {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Undecodable => "undecodable",
            QuarantineReason::EmptyQueue => "empty_queue",
            QuarantineReason::EmptyJobSet => "empty_jobset",
            QuarantineReason::NoEvents => "no_events",
            QuarantineReason::InvalidId => "invalid_id",
            QuarantineReason::DbRejected => "db_rejected",
        }
    }
}

/// A message or event that is quarantined, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Quarantined {
    /// The message's index in the batch.
    pub message: u32,
    /// The event's index in its sequence; None when the whole message is rejected.
    pub event: Option<u32>,
    pub reason: QuarantineReason,
    pub error: String,
    pub sqlstate: Option<String>,
    pub event_kind: Option<&'static str>,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
}

/// A value changed to fit the schema; the original is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Sanitized {
    pub source: EventId,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub field: &'static str,
    pub fix: &'static str,
    pub original: Vec<u8>,
}

/// Rows of one kind by id (job or run id): hashed while a batch is folded, one search per event, and iterated in
/// key order once [`RowChanges::sort`] has run, so statements touch rows in a stable order. (A `BTreeMap` kept
/// them sorted all along, at a string comparison per level of the tree on every search.)
pub type Rows<V> = indexmap::IndexMap<String, V, foldhash::fast::RandomState>;

/// Everything a batch changes. Conversion ends with [`RowChanges::sort`]: the store iterates each map in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowChanges {
    pub jobs: Rows<JobRow>,
    pub job_specs: Rows<JobSpecRow>,
    pub job_errors: Rows<JobErrorRow>,
    pub runs: Rows<RunRow>,
    pub job_updates: Rows<JobDelta>,
    pub run_updates: Rows<RunDelta>,
    pub quarantined: Vec<Quarantined>,
    pub sanitized: Vec<Sanitized>,
    /// Events of a kind the Lookout schema has no use for (or of an unknown kind), per kind: conversion only counts
    /// them; the writer records the metric once the batch has committed.
    pub ignored: BTreeMap<&'static str, u64>,
}

impl RowChanges {
    /// Inserts a job unless the batch already created it (the first submit wins, like the database).
    pub fn create_job(&mut self, job: JobRow, spec: JobSpecRow) {
        self.job_specs.entry(spec.job_id.clone()).or_insert(spec);
        self.jobs.entry(job.job_id.clone()).or_insert(job);
    }

    pub fn create_run(&mut self, run: RunRow) {
        self.runs.entry(run.run_id.clone()).or_insert(run);
    }

    pub fn create_job_error(&mut self, row: JobErrorRow) {
        self.job_errors.entry(row.job_id.clone()).or_insert(row);
    }

    pub fn job(&mut self, job_id: &str) -> &mut JobDelta {
        let at = match self.job_updates.get_index_of(job_id) {
            Some(at) => at,
            None => self.job_updates.insert_full(job_id.to_string(), JobDelta::default()).0,
        };
        &mut self.job_updates[at]
    }

    pub fn run(&mut self, run_id: &str, job_id: &str) -> &mut RunDelta {
        let at = match self.run_updates.get_index_of(run_id) {
            Some(at) => at,
            None => {
                let delta = RunDelta { job_id: job_id.to_string(), ..Default::default() };
                self.run_updates.insert_full(run_id.to_string(), delta).0
            }
        };
        &mut self.run_updates[at]
    }

    /// Puts every map in key order (ids are unique keys, so the order is total).
    pub fn sort(&mut self) {
        self.jobs.sort_unstable_keys();
        self.job_specs.sort_unstable_keys();
        self.job_errors.sort_unstable_keys();
        self.runs.sort_unstable_keys();
        self.job_updates.sort_unstable_keys();
        self.run_updates.sort_unstable_keys();
    }

    /// Counts an event that changes no row.
    pub fn ignore(&mut self, kind: &'static str) {
        *self.ignored.entry(kind).or_default() += 1;
    }

    /// Number of rows this batch may write (creates plus updates), for metrics and batch sizing.
    pub fn row_count(&self) -> usize {
        self.jobs.len()
            + self.job_specs.len()
            + self.job_errors.len()
            + self.runs.len()
            + self.job_updates.len()
            + self.run_updates.len()
    }
}

/// Rows for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{JobRow, RunRow};
    use crate::message::{EventId, Ts};

    /// A new job of queue `q`, job set `s`, with this priority and submit time.
    pub fn job_row(job_id: &str, priority: i64, submitted: Ts) -> JobRow {
        JobRow {
            job_id: job_id.into(),
            queue: "q".into(),
            owner: "o".into(),
            jobset: "s".into(),
            cpu: 1,
            memory: 1,
            ephemeral_storage: 0,
            gpu: 0,
            priority,
            submitted,
            priority_class: None,
            namespace: "ns".into(),
            annotations: "{}".into(),
            external_job_uri: String::new(),
        }
    }

    /// A new run of `job_id` on cluster `c`, leased at `leased`.
    pub fn run_row(job_id: &str, run_id: &str, node: Option<&str>, leased: Ts) -> RunRow {
        RunRow {
            run_id: run_id.into(),
            job_id: job_id.into(),
            cluster: "c".into(),
            node: node.map(str::to_string),
            leased,
            pool: None,
            source: EventId { message: 0, event: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(event: u32) -> EventId {
        EventId { message: 0, event }
    }

    fn terminal(state: i16, at: Ts) -> Terminal {
        Terminal { state, at, cancelled: None, cancel_reason: None, cancel_user: None, failure: JobFailure::default() }
    }

    #[test]
    fn progress_keeps_the_highest_phase_per_run() {
        let mut d = JobDelta::default();
        d.progress(Some("r1"), JobPhase::Running, 30, id(0));
        d.progress(Some("r1"), JobPhase::Leased, 10, id(1));
        d.progress(Some("r1"), JobPhase::Pending, 20, id(2));
        assert_eq!(d.progress, vec![Progress { run_id: Some("r1".into()), phase: JobPhase::Running, at: 30 }]);
    }

    #[test]
    fn requeue_attaches_to_the_run_leased_in_the_batch() {
        let mut d = JobDelta::default();
        d.progress(Some("r1"), JobPhase::Leased, 10, id(0));
        d.progress(None, JobPhase::Requeued, 20, id(1));
        d.progress(Some("r2"), JobPhase::Leased, 30, id(2));
        assert_eq!(
            d.progress,
            vec![
                Progress { run_id: Some("r1".into()), phase: JobPhase::Requeued, at: 20 },
                Progress { run_id: Some("r2".into()), phase: JobPhase::Leased, at: 30 },
            ]
        );
        let mut d = JobDelta::default();
        d.progress(None, JobPhase::Requeued, 20, id(0));
        assert_eq!(d.progress[0].run_id, None);
    }

    #[test]
    fn first_terminal_wins_and_preemption_upgrades_it() {
        let mut d = JobDelta::default();
        d.terminal(terminal(job_state::SUCCEEDED, 10), id(0));
        d.terminal(terminal(job_state::FAILED, 20), id(1));
        assert_eq!(d.terminal.as_ref().unwrap().state, job_state::SUCCEEDED);
        d.terminal(terminal(job_state::PREEMPTED, 30), id(2));
        let t = d.terminal.as_ref().unwrap();
        assert_eq!((t.state, t.at), (job_state::PREEMPTED, 30));
        assert_eq!(d.preempted.as_ref().unwrap().at, 30);
        d.terminal(terminal(job_state::PREEMPTED, 40), id(3));
        assert_eq!(d.preempted.as_ref().unwrap().at, 30);
    }

    #[test]
    fn rejection_is_not_upgraded_and_updates_after_terminal_are_dropped() {
        let mut d = JobDelta::default();
        d.terminal(terminal(job_state::REJECTED, 10), id(0));
        d.terminal(terminal(job_state::PREEMPTED, 20), id(1));
        assert_eq!(d.terminal.as_ref().unwrap().state, job_state::REJECTED);
        d.progress(Some("r"), JobPhase::Running, 30, id(2));
        d.priority(5, 40, id(3));
        assert!(d.progress.is_empty() && d.priority.is_none());
        assert_eq!(d.sources.len(), 4);
    }

    #[test]
    fn run_end_is_first_and_late_terminal_categories_fill() {
        let mut r = RunDelta::default();
        r.active(run_state::RUNNING, 30, Some("n1".into()), id(0));
        r.active(run_state::PENDING, 20, None, id(1));
        assert_eq!(r.active_state, Some(run_state::RUNNING));
        assert_eq!((r.pending, r.started), (Some(20), Some(30)));
        r.end(RunEnd { state: run_state::PREEMPTED, at: Some(40), ..Default::default() }, None, id(2));
        r.end(
            RunEnd { state: run_state::FAILED, at: Some(50), category: Some("oom".into()), ..Default::default() },
            Some(b"dbg".to_vec()),
            id(3),
        );
        assert_eq!(r.end.as_ref().unwrap().state, run_state::PREEMPTED);
        assert_eq!(r.late_category.as_deref(), Some("oom"));
        assert_eq!(r.error_debug.as_deref(), Some(&b"dbg"[..]));
    }
}
