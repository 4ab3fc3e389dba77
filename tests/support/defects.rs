//! What the defect tests (`tests/defects_*.rs`) share: a one-CPU submit, and the messages that bring a job's run
//! to running.

use lookout_ingester::proto::armadaevents::EventKind;

pub use super::events::T0;
use super::events::*;

/// A job of priority 1 asking for one CPU, without annotations.
pub fn submit(job: &str) -> EventKind {
    submit_job(job, 1, Some(pod(&[("cpu", "1")], None)), &[])
}

/// Four messages on queue `q`, job set `js`, from `T0`: the job submitted, its run leased (cluster `c`, node `n1`,
/// pool `p`), assigned, running on `n1`.
pub fn run_to_running(job: &str, run: &str) -> Vec<Vec<u8>> {
    vec![
        seq("q", "js").at(T0, submit(job)).encode(),
        seq("q", "js").at(T0 + 1, leased(job, run, "c", "n1", "p")).encode(),
        seq("q", "js").at(T0 + 2, assigned(job, run)).encode(),
        seq("q", "js").at(T0 + 3, running(job, run, Some("n1"))).encode(),
    ]
}
