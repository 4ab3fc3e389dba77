//! `JobRunSucceeded` (13): the run ends SUCCEEDED with exit code 0 (`finished` = event time). The job moves only
//! with `JobSucceeded`.

use crate::changes::{RowChanges, RunEnd, run_state};
use crate::proto::armadaevents::JobRunSucceeded;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunSucceeded, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunSucceeded") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunSucceeded") else { return };
    let end = RunEnd { state: run_state::SUCCEEDED, at: Some(ctx.ts), exit_code: Some(0), ..Default::default() };
    out.run(&run_id, &job_id).end(end, None, ctx.id);
}
