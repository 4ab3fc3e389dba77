//! Row changes: what `convert` produces from a batch of events and `store` writes in one transaction.
//!
//! Creates are plain rows (inserted only if their key is new). Updates are *deltas*, one per job and one per run,
//! folded here from all of the batch's events for that key, in arrival order, with the precedence rules of
//! `docs/precedence.md`. The store merges each delta with the stored row by the same rules, in SQL, so folding a
//! batch and merging it gives the same rows as applying its events one at a time.

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

/// Job-level failure details kept in our own `job.ingester_*` columns (docs/compatibility.md D16).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFailure {
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub retry_policy: Option<String>,
}

impl JobFailure {
    /// Fields of `newer` that are set replace those of `self`.
    fn overlay(&mut self, newer: &JobFailure) {
        let pick = |old: &mut Option<String>, new: &Option<String>| {
            if new.is_some() {
                old.clone_from(new);
            }
        };
        pick(&mut self.category, &newer.category);
        pick(&mut self.subcategory, &newer.subcategory);
        pick(&mut self.reason, &newer.reason);
        pick(&mut self.message, &newer.message);
        pick(&mut self.retry_policy, &newer.retry_policy);
    }
}

/// One point of active progress: a run (None = whichever run is stored as latest) and a phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub run_id: Option<String>,
    pub phase: JobPhase,
    pub at: Ts,
}

/// The first terminal update of a job in the batch (upgraded to PREEMPTED by a later preemption in the batch).
#[derive(Clone, Debug, PartialEq)]
pub struct Terminal {
    pub state: i16,
    pub at: Ts,
    pub cancelled: Option<Ts>,
    pub cancel_reason: Option<String>,
    pub cancel_user: Option<String>,
    pub failure: JobFailure,
}

/// The batch's first PREEMPTED update; it alone applies over a stored SUCCEEDED, FAILED or CANCELLED.
#[derive(Clone, Debug, PartialEq)]
pub struct Preempted {
    pub at: Ts,
    pub failure: JobFailure,
}

/// All of a batch's updates to one existing job, folded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobDelta {
    /// At most one entry per run key; entries were seen before the batch's first terminal update.
    pub progress: Vec<Progress>,
    /// The last priority seen before the first terminal update, with its event time.
    pub priority: Option<(i64, Ts)>,
    pub terminal: Option<Terminal>,
    pub preempted: Option<Preempted>,
    /// The events folded into this delta (to park them if the job does not exist).
    pub sources: Vec<EventId>,
}

impl JobDelta {
    /// Active progress from a run event (`run_id` set) or a requeue (`run_id` None).
    pub fn progress(&mut self, run_id: Option<&str>, phase: JobPhase, at: Ts, source: EventId) {
        self.sources.push(source);
        if self.terminal.is_some() {
            return;
        }
        // A requeue belongs to the run most recently leased in this batch, if any: leases and requeues both come
        // from the scheduler, so their relative order is reliable. Otherwise it belongs to the stored latest run.
        let run_key: Option<String> = match (run_id, phase) {
            (Some(r), _) => Some(r.to_string()),
            (None, _) => {
                self.progress.iter().rev().find(|p| p.phase == JobPhase::Leased).and_then(|p| p.run_id.clone())
            }
        };
        match self.progress.iter_mut().find(|p| p.run_id == run_key) {
            Some(existing) if phase > existing.phase => {
                existing.phase = phase;
                existing.at = at;
            }
            Some(_) => {}
            None => self.progress.push(Progress { run_id: run_key, phase, at }),
        }
    }

    pub fn priority(&mut self, priority: i64, at: Ts, source: EventId) {
        self.sources.push(source);
        if self.terminal.is_some() {
            return;
        }
        match self.priority {
            Some((_, old_at)) if at < old_at => {}
            _ => self.priority = Some((priority, at)),
        }
    }

    /// A terminal update (its `cancelled`, `cancel_reason` and `cancel_user` are set for CANCELLED). The batch's
    /// first terminal update wins, except that a preemption replaces a SUCCEEDED, FAILED or CANCELLED one.
    pub fn terminal(&mut self, update: Terminal, source: EventId) {
        self.sources.push(source);
        let is_preemption = update.state == job_state::PREEMPTED;
        if is_preemption && self.preempted.is_none() {
            self.preempted = Some(Preempted { at: update.at, failure: update.failure.clone() });
            if let Some(t) = &mut self.terminal
                && matches!(t.state, job_state::SUCCEEDED | job_state::FAILED | job_state::CANCELLED)
            {
                t.state = job_state::PREEMPTED;
                t.at = update.at;
                t.failure.overlay(&update.failure);
            }
        }
        if self.terminal.is_none() {
            self.terminal = Some(update);
        }
    }
}

/// How a run ended: the first ending event of the batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunEnd {
    pub state: i16,
    pub at: Option<Ts>,
    pub exit_code: Option<i32>,
    pub error: Option<Vec<u8>>,
    pub node: Option<String>,
    /// JSON object text for `scheduler_termination_reason`.
    pub termination_reason: Option<String>,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    /// `Some("ingester")` when the category was derived by the ingester (`crate::analytics::classify`).
    pub category_source: Option<&'static str>,
}

/// All of a batch's updates to one existing run, folded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunDelta {
    pub job_id: String,
    /// Highest active state seen (PENDING or RUNNING).
    pub active_state: Option<i16>,
    pub pending: Option<Ts>,
    pub started: Option<Ts>,
    /// Node reported while running (applied unless an ending event names one).
    pub running_node: Option<String>,
    pub end: Option<RunEnd>,
    /// Categories of terminal errors that did not end the run (fill empty columns only).
    pub late_category: Option<String>,
    pub late_subcategory: Option<String>,
    /// Message of the first non-terminal error (fills an empty `error` of a run that has not ended).
    pub nonterminal_error: Option<Vec<u8>>,
    /// Debug text embedded in an error (fills an empty `debug`).
    pub error_debug: Option<Vec<u8>>,
    /// Debug document from `JobRunTerminatedDebugInfo` (wins).
    pub info_debug: Option<Vec<u8>>,
    pub ingress: BTreeMap<String, String>,
    pub sources: Vec<EventId>,
}

impl RunDelta {
    pub fn active(&mut self, state: i16, at: Ts, node: Option<String>, source: EventId) {
        self.sources.push(source);
        if self.active_state.is_none_or(|s| run_state::active_rank(state) > run_state::active_rank(s)) {
            self.active_state = Some(state);
        }
        let slot = if state == run_state::PENDING { &mut self.pending } else { &mut self.started };
        if slot.is_none_or(|old| at > old) {
            *slot = Some(at);
        }
        if let Some(n) = node
            && (self.end.is_none() || self.running_node.is_none())
        {
            self.running_node = Some(n);
        }
    }

    /// An ending event. The batch's first ending decides the run's end; the categories of a later ending (a
    /// terminal `JobRunErrors` after a cancel, say) are kept to fill empty columns (`late_category`,
    /// `late_subcategory`).
    pub fn end(&mut self, end: RunEnd, error_debug: Option<Vec<u8>>, source: EventId) {
        self.sources.push(source);
        if self.error_debug.is_none() {
            self.error_debug = error_debug;
        }
        match &self.end {
            None => self.end = Some(end),
            // A derived category never fills a later ending's gap: only what an event carried does.
            Some(_) if end.category_source.is_some() => {}
            Some(_) => {
                if self.late_category.is_none() {
                    self.late_category = end.category;
                }
                if self.late_subcategory.is_none() {
                    self.late_subcategory = end.subcategory;
                }
            }
        }
    }

    pub fn nonterminal_error(&mut self, error: Option<Vec<u8>>, error_debug: Option<Vec<u8>>, source: EventId) {
        self.sources.push(source);
        if self.end.is_none() && self.nonterminal_error.is_none() {
            self.nonterminal_error = error;
        }
        if self.error_debug.is_none() {
            self.error_debug = error_debug;
        }
    }

    pub fn debug_info(&mut self, debug: Vec<u8>, source: EventId) {
        self.sources.push(source);
        self.info_debug = Some(debug);
    }

    pub fn ingress(&mut self, addresses: BTreeMap<String, String>, source: EventId) {
        self.sources.push(source);
        self.ingress.extend(addresses);
    }
}

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

/// Everything a batch changes. Keys are kept sorted so statements touch rows in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowChanges {
    pub jobs: BTreeMap<String, JobRow>,
    pub job_specs: BTreeMap<String, JobSpecRow>,
    pub job_errors: BTreeMap<String, JobErrorRow>,
    pub runs: BTreeMap<String, RunRow>,
    pub job_updates: BTreeMap<String, JobDelta>,
    pub run_updates: BTreeMap<String, RunDelta>,
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
        if !self.job_updates.contains_key(job_id) {
            self.job_updates.insert(job_id.to_string(), JobDelta::default());
        }
        self.job_updates.get_mut(job_id).expect("inserted above")
    }

    pub fn run(&mut self, run_id: &str, job_id: &str) -> &mut RunDelta {
        if !self.run_updates.contains_key(run_id) {
            self.run_updates.insert(run_id.to_string(), RunDelta { job_id: job_id.to_string(), ..Default::default() });
        }
        self.run_updates.get_mut(run_id).expect("inserted above")
    }

    /// Number of rows this batch may write (creates plus updates), for metrics and batch sizing.
    /// Counts an event that changes no row.
    pub fn ignore(&mut self, kind: &'static str) {
        *self.ignored.entry(kind).or_default() += 1;
    }

    pub fn row_count(&self) -> usize {
        self.jobs.len()
            + self.job_specs.len()
            + self.job_errors.len()
            + self.runs.len()
            + self.job_updates.len()
            + self.run_updates.len()
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
