//! `JobRunCancelled` (24): the run ends CANCELLED (`finished` = event time) with a scheduler termination reason
//! `{"reason": …, "args": {"requestor": …}}` ("no reason provided" when empty; `args` only with a requestor — no
//! fallback to the sequence's user). The job moves only with `CancelledJob`.

use crate::changes::{RowChanges, RunEnd, run_state};
use crate::proto::armadaevents::JobRunCancelled;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunCancelled, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunCancelled") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunCancelled") else { return };
    let reason = ctx.fx.fit_opt(&e.reason, None, "job_run.scheduler_termination_reason");
    let requestor = ctx.fx.fit_opt(&e.requestor, None, "job_run.scheduler_termination_reason");
    let mut doc = serde_json::json!({ "reason": reason.as_deref().unwrap_or("no reason provided") });
    if let Some(r) = requestor {
        doc["args"] = serde_json::json!({ "requestor": r });
    }
    let end = RunEnd {
        state: run_state::CANCELLED,
        at: Some(ctx.ts),
        termination_reason: Some(doc.to_string()),
        ..Default::default()
    };
    out.run(&run_id, &job_id).end(end, None, ctx.id);
}
