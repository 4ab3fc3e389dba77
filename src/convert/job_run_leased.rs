//! `JobRunLeased` (10): creates the run (LEASED, on the executor `cluster`, maybe a node and pool — NULL, not '',
//! when absent, docs/compatibility.md D14) and moves the job to LEASED with this run as its latest — if the run is newer than the
//! job's current one.

use crate::changes::{JobPhase, RowChanges, RunRow};
use crate::proto::armadaevents::JobRunLeased;

use super::{Ctx, limits};

pub fn fold(ctx: &mut Ctx<'_>, e: &JobRunLeased, out: &mut RowChanges) {
    let Some(job_id) = ctx.job_id(out, &e.job_id, "jobRunLeased") else { return };
    let Some(run_id) = ctx.run_id(out, &e.run_id, "jobRunLeased") else { return };
    let run = RunRow {
        run_id: run_id.clone(),
        job_id: job_id.clone(),
        cluster: ctx.fx.fit(&e.executor_id, Some(limits::CLUSTER), "job_run.cluster"),
        node: ctx.fx.fit_opt(&e.node_id, Some(limits::NODE), "job_run.node"),
        leased: ctx.ts,
        pool: ctx.fx.fit_opt(&e.pool, None, "job_run.pool"),
        source: ctx.id,
    };
    out.create_run(run);
    out.job(&job_id).progress(Some(&run_id), JobPhase::Leased, ctx.ts, ctx.id);
}
