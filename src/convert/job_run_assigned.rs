//! `JobRunAssigned` (11): the run is PENDING (`pending` = event time) and so is the job.

use crate::changes::{JobPhase, RowChanges, run_state};
use crate::proto::armadaevents::JobRunAssigned;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunAssigned, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunAssigned") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunAssigned") else { return };
    out.run(&run_id, &job_id).active(run_state::PENDING, ctx.ts, None, ctx.id);
    out.job(&job_id).progress(Some(&run_id), JobPhase::Pending, ctx.ts, ctx.id);
}
