//! Settling: the final row of a job or run the batch creates, with the batch's later updates to it applied.
//!
//! A job submitted in a batch usually sees more of its life in the same batch (leased, running, ended). Applying
//! the precedence rules of `docs/precedence.md` to the row *as created* is a function of the batch alone: nothing
//! stored can rank above a row that does not exist yet. So the final row is computed here, in memory, and the
//! store inserts it once, as it is (no read, no merge in SQL). It must equal what the store's guarded merges
//! (`store::job::UPDATE`, `store::job_run::UPDATE`) would make of the created row and the same delta; the
//! precedence property test (`tests/precedence.rs`) checks that, since one delivery settles rows in memory and
//! the other merges them in SQL.
//!
//! When the row exists after all (a redelivered submit or lease), the store does not insert it and merges the
//! delta with the stored row instead, in SQL, as for any other update.

use super::{JobDelta, JobFailure, JobRow, Progress, Rows, RunDelta, RunRow, job_state, run_state};
use crate::message::Ts;

/// A new job's row as the batch leaves it.
#[derive(Debug, PartialEq)]
pub struct SettledJob<'a> {
    pub row: &'a JobRow,
    pub state: i16,
    pub last_transition_time: Ts,
    pub latest_run_id: Option<&'a str>,
    pub priority: i64,
    /// Event time of the priority stored (`job.ingester_priority_at`).
    pub priority_at: Ts,
    pub cancelled: Option<Ts>,
    pub cancel_reason: Option<&'a str>,
    pub cancel_user: Option<&'a str>,
    /// Failure details of the terminal update, if one applied.
    pub failure: Option<&'a JobFailure>,
}

/// Settles a job created in the batch with its delta. `runs` are the batch's new runs: a progress point can only
/// name one of them (a run is created only for an existing job), and a point naming any other run is dropped
/// (its run does not exist; the store parks that run's events).
pub fn job<'a>(row: &'a JobRow, delta: Option<&'a JobDelta>, runs: &Rows<RunRow>) -> SettledJob<'a> {
    let mut out = SettledJob {
        row,
        state: job_state::QUEUED,
        last_transition_time: row.submitted,
        latest_run_id: None,
        priority: row.priority,
        priority_at: row.submitted,
        cancelled: None,
        cancel_reason: None,
        cancel_user: None,
        failure: None,
    };
    let Some(d) = delta else { return out };

    // Rule 3: the furthest progress point (run leased latest, then run id, then phase); a requeue that names no
    // run ranks below every point that does.
    let furthest = d
        .progress
        .iter()
        .filter_map(|p| match &p.run_id {
            Some(run) => runs.get(run).map(|r| (Some(r.leased), p)),
            None => Some((None, p)),
        })
        .max_by(|(la, a), (lb, b)| {
            (la.is_some(), la, a.run_id.is_some(), &a.run_id, a.phase).cmp(&(
                lb.is_some(),
                lb,
                b.run_id.is_some(),
                &b.run_id,
                b.phase,
            ))
        })
        .map(|(_, p)| p);
    if let Some(Progress { run_id, phase, at }) = furthest {
        out.state = phase.state();
        out.last_transition_time = *at;
        out.latest_run_id = run_id.as_deref();
    }
    // Rule 4: a priority not older than the submitted one.
    if let Some((priority, at)) = d.priority
        && at >= row.submitted
    {
        (out.priority, out.priority_at) = (priority, at);
    }
    // Rule 2: the batch's terminal update ends the job (its latest run still follows the progress above).
    if let Some(t) = &d.terminal {
        out.state = t.state;
        out.last_transition_time = t.at;
        out.cancelled = t.cancelled;
        out.cancel_reason = t.cancel_reason.as_deref();
        out.cancel_user = t.cancel_user.as_deref();
        out.failure = Some(&t.failure);
    }
    out
}

/// A new run's row as the batch leaves it.
#[derive(Debug, PartialEq)]
pub struct SettledRun<'a> {
    pub row: &'a RunRow,
    pub state: i16,
    pub pending: Option<Ts>,
    pub started: Option<Ts>,
    pub finished: Option<Ts>,
    pub node: Option<&'a str>,
    pub exit_code: Option<i32>,
    pub error: Option<&'a [u8]>,
    pub debug: Option<&'a [u8]>,
    pub category: Option<&'a str>,
    pub subcategory: Option<&'a str>,
    pub category_source: Option<&'static str>,
    /// JSON object text.
    pub termination_reason: Option<&'a str>,
    /// JSON object text.
    pub ingress: Option<String>,
}

/// Settles a run created in the batch with its delta (run rules 2–8).
pub fn run<'a>(row: &'a RunRow, delta: Option<&'a RunDelta>) -> SettledRun<'a> {
    let mut out = SettledRun {
        row,
        state: run_state::LEASED,
        pending: None,
        started: None,
        finished: None,
        node: row.node.as_deref(),
        exit_code: None,
        error: None,
        debug: None,
        category: None,
        subcategory: None,
        category_source: None,
        termination_reason: None,
        ingress: None,
    };
    let Some(d) = delta else { return out };
    out.pending = d.pending;
    out.started = d.started;
    out.debug = d.info_debug.as_deref().or(d.error_debug.as_deref());
    out.error = d.nonterminal_error.as_deref();
    out.node = d.running_node.as_deref().or(out.node);
    if let Some(a) = d.active_state
        && run_state::active_rank(a) > run_state::active_rank(run_state::LEASED)
    {
        out.state = a;
    }
    if !d.ingress.is_empty() {
        out.ingress = Some(serde_json::to_string(&d.ingress).expect("a string map always serialises"));
    }
    out.category = d.late_category.as_deref();
    out.subcategory = d.late_subcategory.as_deref();
    if let Some(e) = &d.end {
        out.state = e.state;
        out.finished = e.at;
        out.node = e.node.as_deref().or(out.node);
        out.exit_code = e.exit_code;
        out.error = e.error.as_deref().or(out.error);
        out.termination_reason = e.termination_reason.as_deref();
        out.category = e.category.as_deref().or(out.category);
        out.subcategory = e.subcategory.as_deref().or(out.subcategory);
        out.category_source = e.category.as_ref().and(e.category_source);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{JobPhase, RunEnd, Terminal};
    use crate::message::EventId;

    const T: Ts = 1_700_000_000_000_000;

    fn src() -> EventId {
        EventId { message: 0, event: 0 }
    }

    fn new_job() -> JobRow {
        crate::changes::fixtures::job_row("j", 3, T)
    }

    fn new_run(run_id: &str, leased: Ts) -> RunRow {
        crate::changes::fixtures::run_row("j", run_id, Some("lease-node"), leased)
    }

    fn runs(list: &[RunRow]) -> Rows<RunRow> {
        list.iter().map(|r| (r.run_id.clone(), r.clone())).collect()
    }

    #[test]
    fn a_job_without_updates_is_queued_at_its_submit_time() {
        let row = new_job();
        let s = job(&row, None, &Rows::default());
        assert_eq!((s.state, s.last_transition_time, s.latest_run_id), (job_state::QUEUED, T, None));
        assert_eq!((s.priority, s.priority_at), (3, T));
    }

    #[test]
    fn progress_follows_the_run_leased_last_whatever_the_arrival_order() {
        let row = new_job();
        let runs = runs(&[new_run("r1", T + 10), new_run("r2", T + 20)]);
        let mut d = JobDelta::default();
        d.progress(Some("r2"), JobPhase::Leased, T + 20, src());
        d.progress(Some("r1"), JobPhase::Running, T + 30, src());
        let s = job(&row, Some(&d), &runs);
        assert_eq!((s.state, s.last_transition_time, s.latest_run_id), (job_state::LEASED, T + 20, Some("r2")));
    }

    #[test]
    fn a_point_naming_a_run_the_batch_does_not_create_is_dropped() {
        let row = new_job();
        let mut d = JobDelta::default();
        d.progress(Some("elsewhere"), JobPhase::Running, T + 30, src());
        let s = job(&row, Some(&d), &Rows::default());
        assert_eq!((s.state, s.latest_run_id), (job_state::QUEUED, None));
    }

    #[test]
    fn a_requeue_without_a_run_ranks_below_a_leased_run() {
        let row = new_job();
        let runs = runs(&[new_run("r1", T + 10)]);
        let mut d = JobDelta::default();
        d.progress(None, JobPhase::Requeued, T + 5, src());
        d.progress(Some("r1"), JobPhase::Pending, T + 12, src());
        let s = job(&row, Some(&d), &runs);
        assert_eq!((s.state, s.latest_run_id), (job_state::PENDING, Some("r1")));
        let mut d = JobDelta::default();
        d.progress(None, JobPhase::Requeued, T + 5, src());
        let s = job(&row, Some(&d), &runs);
        assert_eq!((s.state, s.last_transition_time, s.latest_run_id), (job_state::QUEUED, T + 5, None));
    }

    #[test]
    fn the_terminal_update_wins_and_keeps_the_latest_run() {
        let row = new_job();
        let runs = runs(&[new_run("r1", T + 10)]);
        let mut d = JobDelta::default();
        d.progress(Some("r1"), JobPhase::Running, T + 30, src());
        d.priority(9, T + 1, src());
        let failure = JobFailure { category: Some("oom".into()), ..Default::default() };
        d.terminal(
            Terminal {
                state: job_state::FAILED,
                at: T + 40,
                cancelled: None,
                cancel_reason: None,
                cancel_user: None,
                failure: failure.clone(),
            },
            src(),
        );
        let s = job(&row, Some(&d), &runs);
        assert_eq!((s.state, s.last_transition_time, s.latest_run_id), (job_state::FAILED, T + 40, Some("r1")));
        assert_eq!((s.priority, s.priority_at), (9, T + 1));
        assert_eq!(s.failure, Some(&failure));
    }

    #[test]
    fn a_priority_older_than_the_submit_is_ignored() {
        let row = new_job();
        let mut d = JobDelta::default();
        d.priority(9, T - 1, src());
        let s = job(&row, Some(&d), &Rows::default());
        assert_eq!((s.priority, s.priority_at), (3, T));
    }

    #[test]
    fn a_run_without_updates_is_leased_on_its_lease_node() {
        let row = new_run("r", T);
        let s = run(&row, None);
        assert_eq!((s.state, s.node), (run_state::LEASED, Some("lease-node")));
    }

    #[test]
    fn a_run_ends_with_its_first_ending_and_fills_gaps_from_later_ones() {
        let row = new_run("r", T);
        let mut d = RunDelta::default();
        d.active(run_state::RUNNING, T + 20, Some("run-node".into()), src());
        d.active(run_state::PENDING, T + 10, None, src());
        d.ingress([("k".to_string(), "v".to_string())].into(), src());
        d.end(
            RunEnd {
                state: run_state::FAILED,
                at: Some(T + 30),
                exit_code: Some(137),
                error: Some(b"e".to_vec()),
                ..Default::default()
            },
            Some(b"dbg".to_vec()),
            src(),
        );
        d.end(RunEnd { state: run_state::FAILED, category: Some("oom".into()), ..Default::default() }, None, src());
        let s = run(&row, Some(&d));
        assert_eq!(
            (s.state, s.pending, s.started, s.finished),
            (run_state::FAILED, Some(T + 10), Some(T + 20), Some(T + 30))
        );
        assert_eq!((s.node, s.exit_code), (Some("run-node"), Some(137)));
        assert_eq!((s.error, s.debug), (Some(&b"e"[..]), Some(&b"dbg"[..])));
        assert_eq!((s.category, s.category_source), (Some("oom"), None));
        assert_eq!(s.ingress.as_deref(), Some(r#"{"k":"v"}"#));
    }

    #[test]
    fn an_active_run_keeps_its_first_error_and_no_category() {
        let row = new_run("r", T);
        let mut d = RunDelta::default();
        d.active(run_state::PENDING, T + 10, None, src());
        d.nonterminal_error(Some(b"warn".to_vec()), None, src());
        let s = run(&row, Some(&d));
        assert_eq!((s.state, s.finished, s.error, s.category), (run_state::PENDING, None, Some(&b"warn"[..]), None));
    }
}
