//! `ReprioritisedJob` (4): the job's new priority (no state change, no transition time).

use crate::changes::RowChanges;
use crate::proto::armadaevents::ReprioritisedJob;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &ReprioritisedJob, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "reprioritisedJob") else { return };
    out.job(&job_id).priority(i64::from(e.priority), ctx.ts, ctx.id);
}
