//! `JobRunErrors` (14): the first error that is not a preemption (`JobRunPreempted` already ended that run) decides
//! what is written (docs/compatibility.md §5.3). A terminal error ends the run — FAILED, LEASE_RETURNED or LEASE_EXPIRED — with
//! `finished`, its error text, exit code, node and debug text, and the failure category and subcategory (each only
//! when non-empty, at most 63 characters, docs/compatibility.md §5.5). A non-terminal error changes no state (docs/compatibility.md D15): its text
//! only fills an empty `error` of a run still going.

use crate::changes::{RowChanges, RunEnd, run_state};
use crate::proto::armadaevents::JobRunErrors;
use crate::proto::armadaevents::error::Reason;

use super::{Ctx, limits};

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunErrors, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunErrors") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunErrors") else { return };
    let Some(error) = e.errors.iter().find(|err| !matches!(err.reason, Some(Reason::JobRunPreemptedError(_)))) else {
        return;
    };
    let mut node = None;
    let mut exit_code = None;
    let mut debug: &[u8] = &[];
    let (state, text): (i16, &[u8]) = match &error.reason {
        Some(Reason::PodError(p)) => {
            node = ctx.fx.fit_opt(&p.node_name, Some(limits::NODE), "job_run.node");
            exit_code = Some(p.container_errors.iter().map(|c| c.exit_code).find(|&c| c != 0).unwrap_or(0));
            debug = &p.debug_message;
            (run_state::FAILED, &p.message)
        }
        Some(Reason::PodLeaseReturned(p)) => {
            debug = &p.debug_message;
            (run_state::LEASE_RETURNED, &p.message)
        }
        Some(Reason::LeaseExpired(_)) => (run_state::LEASE_EXPIRED, b"Lease expired"),
        Some(Reason::ReconciliationError(r)) => (run_state::FAILED, &r.message),
        _ => (run_state::FAILED, b"Unknown error"),
    };
    let error_blob = ctx.blob_opt(text);
    let debug_blob = ctx.blob_opt(debug);
    let run = out.run(&run_id, &job_id);
    if error.terminal {
        let mut category = ctx.fx.fit_opt(&error.failure_category, Some(limits::CATEGORY), "job_run.failure_category");
        let mut subcategory =
            ctx.fx.fit_opt(&error.failure_subcategory, Some(limits::CATEGORY), "job_run.failure_subcategory");
        let mut category_source = None;
        if category.is_none()
            && ctx.conv.classify_failures
            && let Some((c, s)) = crate::analytics::classify::run_error(error)
        {
            category = Some(c.to_string());
            subcategory = subcategory.or(s.map(str::to_string));
            category_source = Some(crate::analytics::classify::SOURCE_INGESTER);
        }
        let end = RunEnd {
            state,
            at: Some(ctx.ts),
            exit_code,
            error: error_blob,
            node,
            termination_reason: None,
            category,
            subcategory,
            category_source,
        };
        run.end(end, debug_blob, ctx.id);
    } else {
        run.nonterminal_error(error_blob, debug_blob, ctx.id);
    }
}
