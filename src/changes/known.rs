//! Known rows: a stored job whose columns the writer knows (it wrote them last), and the job merge applied to it in
//! memory.
//!
//! The store's guarded merge (`store::job::UPDATE`) reads each stored job, the `leased` time of the runs involved,
//! decides with the rules of `docs/precedence.md` and writes. A writer that wrote the row itself already knows what
//! that read would return; [`merge`] makes the same decision from that knowledge, and the store writes the result
//! with a compare-and-set guard on every column the decision read (`store::job::CAS`). A row that changed in the
//! meantime (another replica, a partition that changed hands) fails the guard and goes through the guarded merge,
//! so stale knowledge costs a second statement, never a wrong row.
//!
//! [`merge`] must decide exactly as `job_merge!` in `store/job.rs` does; where that statement's outcome would
//! depend on something not known here (a run whose lease time is unknown, a tie the statement breaks arbitrarily)
//! it answers [`Merged::Unknown`] and the statement decides. `tests/known_rows.rs` holds the two to each other on
//! the real Postgres.

use super::{JobDelta, JobFailure, JobPhase, Rows, RunRow, job_state};
use crate::message::Ts;

/// The columns of a stored `job` row that the job merge reads and writes, and the runs of the job with their lease
/// time (at least its latest run).
#[derive(Clone, Debug, PartialEq)]
pub struct KnownJob {
    pub state: i16,
    pub last_transition_time: Ts,
    pub latest_run_id: Option<String>,
    pub priority: i64,
    pub priority_at: Option<Ts>,
    pub cancelled: Option<Ts>,
    pub cancel_reason: Option<String>,
    pub cancel_user: Option<String>,
    /// The `ingester_failure_*` and `ingester_retry_policy` columns.
    pub failure: JobFailure,
    /// `(run_id, leased)` of the job's runs known to exist.
    pub runs: Vec<(String, Ts)>,
}

/// What [`merge`] decided.
#[derive(Debug, PartialEq)]
pub enum Merged {
    /// The delta changes the row: its new columns (`runs` as before).
    Changed(Box<KnownJob>),
    /// The delta changes nothing.
    Unchanged,
    /// Not decidable from what is known: the store's merge decides.
    Unknown,
}

impl KnownJob {
    /// The lease time of one of the job's runs: a run the batch creates for this job, or a known one.
    fn leased(&self, job_id: &str, run_id: &str, batch_runs: &Rows<RunRow>) -> Option<Ts> {
        batch_runs
            .get(run_id)
            .filter(|r| r.job_id == job_id)
            .map(|r| r.leased)
            .or_else(|| self.runs.iter().find(|(id, _)| id == run_id).map(|(_, at)| *at))
    }

    /// The progress phase the stored state implies (`cur_phase` of the merge).
    fn phase(&self) -> i16 {
        match self.state {
            job_state::LEASED => 1,
            job_state::PENDING => 2,
            job_state::RUNNING => 3,
            job_state::QUEUED if self.latest_run_id.is_some() => 4,
            _ => 0,
        }
    }
}

/// A progress candidate's order key: the lease time of its run, the run, the phase.
type Key<'a> = (Option<Ts>, Option<&'a str>, JobPhase);

/// The merge's `ORDER BY leased DESC NULLS LAST, run COLLATE "C" DESC NULLS LAST, phase DESC` as an ascending
/// key: a missing lease or run ranks below any present one, runs compare byte by byte.
fn rank<'a>(k: &Key<'a>) -> (bool, Option<Ts>, bool, Option<&'a [u8]>, JobPhase) {
    (k.0.is_some(), k.0, k.1.is_some(), k.1.map(str::as_bytes), k.2)
}

/// The job merge (`store::job::UPDATE`, job rules 2–6) of `delta` into the known row `cur` of job `job_id`.
/// `batch_runs`: the runs the batch creates (lease times are read there first, as the merge reads them from
/// `job_run` after they are inserted).
pub fn merge(job_id: &str, cur: &KnownJob, delta: &JobDelta, batch_runs: &Rows<RunRow>) -> Merged {
    let terminal = job_state::is_terminal(cur.state);
    // The stored latest run's lease time (the merge reads it from `job_run`).
    let cur_leased = match &cur.latest_run_id {
        Some(run) => match cur.leased(job_id, run, batch_runs) {
            Some(at) => Some(at),
            None => return Merged::Unknown,
        },
        None => None,
    };

    // The furthest progress point: (leased DESC NULLS LAST, run DESC NULLS LAST, phase DESC); a requeue without a
    // run refers to the stored latest run, and only if it is not older than that run's lease.
    let mut best: Option<(Key, Ts)> = None;
    let mut tied = false;
    for p in &delta.progress {
        let run = p.run_id.as_deref().or(cur.latest_run_id.as_deref());
        let leased = match run {
            Some(r) => match cur.leased(job_id, r, batch_runs) {
                Some(at) => Some(at),
                // A run not known to exist: the merge would not see it (orphans are taken out before it runs).
                None => return Merged::Unknown,
            },
            None => None,
        };
        if p.run_id.is_none() && leased.is_some_and(|l| p.at < l) {
            continue;
        }
        let key: Key = (leased, run, p.phase);
        match &best {
            Some((b, at)) if rank(&key) == rank(b) => tied |= *at != p.at,
            Some((b, _)) if rank(&key) < rank(b) => {}
            _ => {
                best = Some((key, p.at));
                tied = false;
            }
        }
    }
    if tied {
        return Merged::Unknown;
    }

    let cur_key = (cur_leased.unwrap_or(Ts::MIN), cur.latest_run_id.as_deref().unwrap_or("").as_bytes());
    let apply_terminal = !terminal && delta.terminal.is_some();
    let apply_preemption = matches!(cur.state, job_state::SUCCEEDED | job_state::FAILED | job_state::CANCELLED)
        && delta.preempted.is_some();
    let b_key = best.as_ref().map(|((leased, run, _), _)| (leased.unwrap_or(Ts::MIN), run.unwrap_or("").as_bytes()));
    let apply_progress = !terminal
        && best.as_ref().zip(b_key).is_some_and(|(((_, _, phase), _), b)| (b, *phase as i16) > (cur_key, cur.phase()));
    let follow_run =
        terminal && best.as_ref().is_some_and(|((_, run, _), _)| run.is_some()) && b_key.is_some_and(|b| b > cur_key);
    let apply_priority =
        !terminal && delta.priority.is_some_and(|(_, at)| cur.priority_at.is_none_or(|stored| at >= stored));
    if !(apply_preemption || apply_terminal || apply_progress || follow_run || apply_priority) {
        return Merged::Unchanged;
    }

    let mut new = cur.clone();
    if (apply_progress || follow_run)
        && let Some(((_, Some(run), _), _)) = &best
    {
        new.latest_run_id = Some(run.to_string());
    }
    if apply_priority && let Some((priority, at)) = delta.priority {
        (new.priority, new.priority_at) = (priority, Some(at));
    }
    if apply_preemption && let Some(p) = &delta.preempted {
        new.state = job_state::PREEMPTED;
        new.last_transition_time = p.at;
        new.failure.overlay(&p.failure);
    } else if apply_terminal && let Some(t) = &delta.terminal {
        new.state = t.state;
        new.last_transition_time = t.at;
        new.failure.overlay(&t.failure);
    } else if apply_progress && let Some(((_, _, phase), at)) = &best {
        new.state = phase.state();
        new.last_transition_time = *at;
    }
    if apply_terminal && let Some(t) = &delta.terminal {
        new.cancelled = t.cancelled.or(new.cancelled);
        if t.cancel_reason.is_some() {
            new.cancel_reason.clone_from(&t.cancel_reason);
        }
        if t.cancel_user.is_some() {
            new.cancel_user.clone_from(&t.cancel_user);
        }
    }
    Merged::Changed(Box::new(new))
}

impl KnownJob {
    /// The row a new job was inserted as (`changes::settle`), with the runs the batch created for it.
    pub fn settled(s: &super::settle::SettledJob<'_>, runs: Vec<(String, Ts)>) -> KnownJob {
        KnownJob {
            state: s.state,
            last_transition_time: s.last_transition_time,
            latest_run_id: s.latest_run_id.map(str::to_string),
            priority: s.priority,
            priority_at: Some(s.priority_at),
            cancelled: s.cancelled,
            cancel_reason: s.cancel_reason.map(str::to_string),
            cancel_user: s.cancel_user.map(str::to_string),
            failure: s.failure.cloned().unwrap_or_default(),
            runs,
        }
    }
}
