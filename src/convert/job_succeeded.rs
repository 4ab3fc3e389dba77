//! `JobSucceeded` (8): the job ends SUCCEEDED.

use crate::changes::{JobFailure, RowChanges, Terminal, job_state};
use crate::proto::armadaevents::JobSucceeded;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobSucceeded, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobSucceeded") else { return };
    let terminal = Terminal {
        state: job_state::SUCCEEDED,
        at: ctx.ts,
        cancelled: None,
        cancel_reason: None,
        cancel_user: None,
        failure: JobFailure::default(),
    };
    out.job(&job_id).terminal(terminal, ctx.id);
}
