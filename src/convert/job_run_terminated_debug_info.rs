//! `JobRunTerminatedDebugInfo` (26): the debug document of an ended run, compressed into `debug` as sent. State
//! untouched; an empty document writes nothing (docs/compatibility.md D9).

use crate::changes::RowChanges;
use crate::proto::armadaevents::JobRunTerminatedDebugInfo;

use super::Ctx;

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunTerminatedDebugInfo, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunTerminatedDebugInfo") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunTerminatedDebugInfo") else { return };
    let Some(blob) = ctx.blob_opt(&e.debug_message) else { return };
    out.run(&run_id, &job_id).debug_info(blob, ctx.id);
}
