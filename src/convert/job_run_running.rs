//! `JobRunRunning` (12): the run is RUNNING (`started` = event time) on the node of its first pod info that names
//! one, and so is the job. Without a node name the stored node is kept (never `UNKNOWN`, docs/compatibility.md D14).

use crate::changes::{JobPhase, RowChanges, run_state};
use crate::proto::armadaevents::JobRunRunning;
use crate::proto::armadaevents::kubernetes_resource_info::Info;

use super::{Ctx, limits};

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunRunning, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunRunning") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunRunning") else { return };
    let node_bytes = e.resource_infos.iter().find_map(|info| match &info.info {
        Some(Info::PodInfo(pod)) if !pod.node_name.is_empty() => Some(pod.node_name.clone()),
        _ => None,
    });
    let node = node_bytes.and_then(|b| ctx.fx.fit_opt(&b, Some(limits::NODE), "job_run.node"));
    out.run(&run_id, &job_id).active(run_state::RUNNING, ctx.ts, node, ctx.id);
    out.job(&job_id).progress(Some(&run_id), JobPhase::Running, ctx.ts, ctx.id);
}
