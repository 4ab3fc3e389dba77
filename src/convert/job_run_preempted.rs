//! `JobRunPreempted` (19): the preempted run (`preempted_run_id`) ends PREEMPTED, with the reason as its error and
//! a scheduler termination reason `{"reason": …, "args": {"preemptingJobId": …, "requestor": …}}` (requestor falls
//! back to the sequence's user; the document is written only if something in it is non-empty). The job moves to
//! PREEMPTED only through the accompanying `JobErrors`.

use crate::changes::{RowChanges, RunEnd, run_state};
use crate::proto::armadaevents::JobRunPreempted;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunPreempted, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.preempted_job_id, "jobRunPreempted") else { return };
    let Some(run_id) = ctx.run_id(out, &e.preempted_run_id, "jobRunPreempted") else { return };
    let reason = ctx.fx.fit_opt(&e.reason, None, "job_run.scheduler_termination_reason");
    let preempting = ctx.fx.fit_opt(&e.preempting_job_id, None, "job_run.scheduler_termination_reason");
    let requestor = ctx
        .fx
        .fit_opt(&e.requestor, None, "job_run.scheduler_termination_reason")
        .or_else(|| Some(ctx.owner.to_string()).filter(|o| !o.is_empty()));
    let mut args = serde_json::Map::new();
    if let Some(p) = preempting {
        args.insert("preemptingJobId".into(), p.into());
    }
    if let Some(r) = requestor {
        args.insert("requestor".into(), r.into());
    }
    let termination_reason = if reason.is_some() || !args.is_empty() {
        let mut doc = serde_json::json!({ "reason": reason.clone().unwrap_or_default() });
        if !args.is_empty() {
            doc["args"] = serde_json::Value::Object(args);
        }
        Some(doc.to_string())
    } else {
        None
    };
    let mut end = RunEnd {
        state: run_state::PREEMPTED,
        at: Some(ctx.ts),
        error: ctx.blob_opt(&e.reason),
        termination_reason,
        ..Default::default()
    };
    if ctx.conv.classify_failures {
        let (category, subcategory) = crate::analytics::classify::PREEMPTED;
        end.category = Some(category.to_string());
        end.subcategory = subcategory.map(str::to_string);
        end.category_source = Some(crate::analytics::classify::SOURCE_INGESTER);
    }
    out.run(&run_id, &job_id).end(end, None, ctx.id);
}
