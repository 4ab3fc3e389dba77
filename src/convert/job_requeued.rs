//! `JobRequeued` (22): the job goes back to QUEUED after its latest run; the latest run id is kept.

use crate::changes::{JobPhase, RowChanges};
use crate::proto::armadaevents::JobRequeued;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRequeued, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRequeued") else { return };
    out.job(&job_id).progress(None, JobPhase::Requeued, ctx.ts, ctx.id);
}
