//! `CancelledJob` (7): the job ends CANCELLED, with the reason and who asked (the event's requestor, else the
//! sequence's user).

use crate::changes::{JobFailure, RowChanges, Terminal, job_state};
use crate::proto::armadaevents::CancelledJob;

use super::{Ctx, limits};

pub fn fold(ctx: &mut Ctx<'_>, e: &CancelledJob, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "cancelledJob") else { return };
    let cancel_reason = ctx.fx.fit_opt(&e.reason, Some(limits::CANCEL_REASON), "job.cancel_reason");
    let requestor = ctx.fx.fit_opt(&e.requestor, Some(limits::CANCEL_USER), "job.cancel_user");
    let cancel_user = requestor.or_else(|| Some(ctx.owner.to_string()).filter(|o| !o.is_empty()));
    let terminal = Terminal {
        state: job_state::CANCELLED,
        at: ctx.ts,
        cancelled: Some(ctx.ts),
        cancel_reason,
        cancel_user,
        failure: JobFailure::default(),
    };
    out.job(&job_id).terminal(terminal, ctx.id);
}
