//! `JobErrors` (9): the first terminal error ends the job — PREEMPTED for a preemption, REJECTED (plus a
//! `job_error` row with the message) for a rejection, FAILED otherwise (docs/compatibility.md §5.4). Non-terminal errors announce
//! a retry and change nothing. The error's category, subcategory, reason, message and retry policy, which the
//! reference drops, are kept in our `job.ingester_*` columns (docs/compatibility.md D16).

use crate::changes::{JobErrorRow, JobFailure, RowChanges, Terminal, job_state};
use crate::proto::armadaevents::JobErrors;
use crate::proto::armadaevents::error::Reason;

use super::{Ctx, limits};

pub fn fold(ctx: &mut Ctx<'_>, e: &JobErrors, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobErrors") else { return };
    let Some(error) = e.errors.iter().find(|err| err.terminal) else { return };
    let (state, reason_name, message): (i16, &str, Option<&[u8]>) = match &error.reason {
        Some(Reason::JobRunPreemptedError(r)) => (job_state::PREEMPTED, "jobRunPreemptedError", Some(&r.reason)),
        Some(Reason::JobRejected(r)) => (job_state::REJECTED, "jobRejected", Some(&r.message)),
        Some(Reason::MaxRunsExceeded(r)) => (job_state::FAILED, "maxRunsExceeded", Some(&r.message)),
        Some(Reason::GangJobUnschedulable(r)) => (job_state::FAILED, "gangJobUnschedulable", Some(&r.message)),
        Some(Reason::ReconciliationError(r)) => (job_state::FAILED, "reconciliationError", Some(&r.message)),
        Some(Reason::PodError(r)) => (job_state::FAILED, "podError", Some(&r.message)),
        Some(Reason::PodLeaseReturned(r)) => (job_state::FAILED, "podLeaseReturned", Some(&r.message)),
        Some(Reason::KubernetesError(_)) => (job_state::FAILED, "kubernetesError", None),
        Some(Reason::ContainerError(r)) => (job_state::FAILED, "containerError", Some(&r.message)),
        Some(Reason::ExecutorError(_)) => (job_state::FAILED, "executorError", None),
        Some(Reason::LeaseExpired(_)) => (job_state::FAILED, "leaseExpired", None),
        None => (job_state::FAILED, "unknown", None),
    };
    let message_text =
        message.and_then(|m| ctx.fx.fit_opt(m, Some(limits::FAILURE_MESSAGE), "job.ingester_failure_message"));
    if state == job_state::REJECTED {
        let blob = ctx.blob(message.unwrap_or_default());
        out.create_job_error(JobErrorRow { job_id: job_id.clone(), error: blob, source: ctx.id });
    }
    let failure = JobFailure {
        category: ctx.fx.fit_opt(&error.failure_category, Some(limits::CATEGORY), "job.ingester_failure_category"),
        subcategory: ctx.fx.fit_opt(
            &error.failure_subcategory,
            Some(limits::CATEGORY),
            "job.ingester_failure_subcategory",
        ),
        reason: Some(reason_name.to_string()),
        message: message_text,
        retry_policy: ctx.fx.fit_opt(&error.retry_policy_name, Some(limits::RETRY_POLICY), "job.ingester_retry_policy"),
    };
    let terminal = Terminal { state, at: ctx.ts, cancelled: None, cancel_reason: None, cancel_user: None, failure };
    out.job(&job_id).terminal(terminal, ctx.id);
}
