//! All of a batch's updates to one existing job, folded ([`JobDelta`]), with the precedence rules of
//! `docs/precedence.md` (job rules).

use super::{JobPhase, job_state};
use crate::message::{EventId, Ts};

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
    pub(super) fn overlay(&mut self, newer: &JobFailure) {
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
