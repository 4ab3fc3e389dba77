//! Profile `storm`: a failure storm. Seven in ten jobs are submitted over the first five minutes of event time and
//! start running on the `gpu` node pool; at minute 15 the pool fails and every one of those runs fails within 5 s
//! (terminal pod error, `infrastructure`/`node-failure`). The scheduler fails 60 % of those jobs and requeues the
//! other 40 %, which run again on the `cpu` pool and succeed. The other three in ten jobs are a background load
//! that runs on the `cpu` pool for 30 s to 10 min and succeeds, submitted over the whole stream.

use rand::Rng;

use super::long::Gen;
use super::{Source, Spec, Stream, log_uniform};
use crate::loadgen::events::*;

const STORM_AT_MS: i64 = 15 * 60 * 1000;
const STORM_SPREAD_MS: i64 = 5_000;

pub fn generate(spec: &Spec) -> Stream {
    let mut g = Gen::new(spec.seed);
    let t0 = spec.start * 1000;
    let jobsets = g.timeline.jobsets.len() as u32;
    let mut n = 0u32;
    while !spec.size.reached(n as usize, g.timeline.len()) {
        let jobset = g.rng.random_range(0..jobsets);
        if g.rng.random_bool(0.7) {
            // On the failing pool: running before the storm.
            let t_submit = t0 + g.rng.random_range(0..5 * 60 * 1000);
            let job = g.job(n, jobset, t_submit);
            g.submit(&job, t_submit, n as usize);
            let t_lease = t_submit + g.between(1_000, 60_000);
            let (run, node, _) = g.start_run(&job, t_lease, Some("gpu"));
            let t_fail = t0 + STORM_AT_MS + g.between(0, STORM_SPREAD_MS);
            let reason = pod_error("node lost: kubelet stopped posting status", &node, &[], "node NotReady");
            let e = error(true, reason, "infrastructure", "node-failure");
            g.push(t_fail, &job, Source::Executor, run_errors(&job.id, &run, vec![e.clone()]));
            g.stream.record_failure("infrastructure", "node-failure");
            let t = t_fail + g.between(200, 2_000);
            if g.rng.random_bool(0.6) {
                g.push(t, &job, Source::Scheduler, job_errors(&job.id, vec![e]));
                g.stream.record("failed-in-storm", 5);
            } else {
                g.push(t, &job, Source::Scheduler, requeued(&job.id));
                let t_lease = t + g.between(2_000, 120_000);
                let (run, _, t_running) = g.start_run(&job, t_lease, Some("cpu"));
                g.succeed(&job, &run, t_running, 30_000.0, 600_000.0);
                g.stream.record("requeued-after-storm", 4);
            }
        } else {
            let t_submit = t0 + g.rng.random_range(0..STORM_AT_MS + 10 * 60 * 1000);
            let job = g.job(n, jobset, t_submit);
            g.submit(&job, t_submit, n as usize);
            let t_lease = t_submit + log_uniform(&mut g.rng, 1_000.0, 60_000.0);
            let (run, _, t_running) = g.start_run(&job, t_lease, Some("cpu"));
            g.succeed(&job, &run, t_running, 30_000.0, 600_000.0);
            g.stream.record("background-succeeded", 4);
        }
        n += 1;
    }
    g.finish()
}
