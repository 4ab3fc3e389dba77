//! Profile `short`: the sample stream. Every job lives about 20 s of event time and is one of six kinds in turn:
//! succeeded (two of six), failed (OOM, category `oom`/`container-limit`), cancelled while running, rejected, or
//! leased, lease returned, requeued, run again and preempted. One event per message; a job starts every 2 s and its
//! messages are 3 s apart, so jobs interleave like a live partition. Three queues, ten jobs per job set.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::events::*;
use super::{Message, Spec, Stream, ids, probe_of};
use crate::proto::armadaevents::EventKind;

/// The messages of job `i`, as (order key, message).
fn job(rng: &mut StdRng, i: usize, t0: i64, stream: &mut Stream) -> Vec<(i64, Message)> {
    let queue = ["research", "batch", "gpu-train"][i % 3];
    let jobset = format!("{queue}-set-{}", i / 10);
    let job = ids::job_id(rng, t0 * 1000);
    let runs = [ids::run_id(rng), ids::run_id(rng)];
    let node = format!("node-{}", i % 7);
    let mut out: Vec<(i64, Message)> = Vec::new();
    let mut s = |t: i64, kind: EventKind| {
        let probe = probe_of(std::iter::once(&kind));
        let payload = seq(queue, &jobset).at(t, kind).encode();
        let order = t0 + out.len() as i64 * 3;
        out.push((order, Message { key: jobset.clone(), payload, events: 1, probe }));
    };
    let pod_spec = pod(
        &[("cpu", ["500m", "2", "1.5"][i % 3]), ("memory", ["1Gi", "512Mi", "4Gi"][i % 3])],
        Some("armada-default"),
    );
    s(t0, submit_job(&job, (i % 5) as u32, Some(pod_spec), &[("armadaproject.io/team", "ml"), ("owner-id", "42")]));
    let start = |s: &mut dyn FnMut(i64, EventKind), r: &str, t: i64| {
        s(t, leased(&job, r, "cluster-a", &node, "default"));
        s(t + 1, assigned(&job, r));
        s(t + 2, running(&job, r, Some(&node)));
    };
    match i % 6 {
        0 | 1 => {
            start(&mut s, &runs[0], t0 + 1);
            s(t0 + 20, run_succeeded(&job, &runs[0]));
            s(t0 + 21, job_succeeded(&job));
            stream.record("succeeded", 4);
        }
        2 => {
            start(&mut s, &runs[0], t0 + 1);
            let oom = error(
                true,
                pod_error("container main was OOMKilled", &node, &[137], "pod events: OOMKilled"),
                "oom",
                "container-limit",
            );
            s(t0 + 15, run_errors(&job, &runs[0], vec![oom.clone()]));
            s(t0 + 16, job_errors(&job, vec![oom]));
            stream.record("failed", 5);
            stream.record_failure("oom", "container-limit");
        }
        3 => {
            start(&mut s, &runs[0], t0 + 1);
            s(t0 + 9, run_cancelled(&job, &runs[0], "no longer needed", "alice"));
            s(t0 + 10, cancelled_job(&job, "no longer needed", "alice"));
            stream.record("cancelled-while-running", 6);
        }
        4 => {
            let reason = rejected("requested resources exceed the queue's limits");
            s(t0 + 1, job_errors(&job, vec![error(true, reason, "internal", "job-rejected")]));
            stream.record("rejected", 9);
        }
        _ => {
            s(t0 + 1, leased(&job, &runs[0], "cluster-a", &node, "default"));
            let returned = error(true, lease_returned("pod could not be scheduled", ""), "", "");
            s(t0 + 3, run_errors(&job, &runs[0], vec![returned]));
            s(t0 + 4, requeued(&job));
            start(&mut s, &runs[1], t0 + 5);
            s(t0 + 8, run_preempted(&job, &runs[1], "preempted by a higher-priority job", "01other", ""));
            s(t0 + 9, job_errors(&job, vec![error(true, preempted_error("preempted"), "", "")]));
            stream.record("lease-returned-then-preempted", 7);
        }
    }
    out
}

pub fn generate(spec: &Spec) -> Stream {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut stream = Stream::default();
    let mut timed: Vec<(i64, usize, Message)> = Vec::new();
    let mut i = 0;
    while !spec.size.reached(i, timed.len()) {
        let t0 = spec.start + (i as i64) * 2;
        timed.extend(job(&mut rng, i, t0, &mut stream).into_iter().map(|(t, m)| (t, i, m)));
        i += 1;
    }
    // Interleaved in time like a live partition (a stable sort keeps each job's own order).
    timed.sort_by_key(|(t, i, _)| (*t, *i));
    stream.events = timed.len();
    stream.messages = timed.into_iter().map(|(_, _, m)| m).collect();
    stream
}
