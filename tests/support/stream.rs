//! A realistic event stream for the service and fault tests: many jobs' lives, keyed by job set, interleaved in
//! time like a live topic (`stream`), and the same with a witness value in every message (`witnessed`).

use lookout_ingester::proto::armadaevents::EventKind;

use super::events::*;

/// A message as published: its key (the job set) and its payload.
pub type Keyed = (String, Vec<u8>);

/// The messages of one job's life, keyed by job set, in publish order (like `examples/sample_events.rs`): jobs that
/// succeed, fail with a category, are cancelled, rejected, or retried after a lease return and then preempted.
/// `tag` (≤ 8 characters) keeps ids unique per stream.
pub fn job_messages(tag: &str, i: usize, t0: i64) -> Vec<Keyed> {
    let queue = ["research", "batch", "gpu-train"][i % 3];
    let jobset = format!("{queue}-set-{}", i / 10);
    let job = format!("{tag}j{i:08}");
    let run = |n: usize| format!("{tag}-r{n}-{i:012}");
    let node = format!("node-{}", i % 7);
    let s = |t: i64, kind: EventKind| (jobset.clone(), seq(queue, &jobset).at(t, kind).encode());
    let cpu = ["500m", "2", "1.5"][i % 3];
    let pod_spec = pod(&[("cpu", cpu), ("memory", ["1Gi", "512Mi", "4Gi"][i % 3])], Some("armada-default"));
    let mut out = vec![s(t0, submit_job(&job, (i % 5) as u32, Some(pod_spec), &[("armadaproject.io/team", "ml")]))];
    let start = |out: &mut Vec<Keyed>, r: &str, t: i64| {
        out.push(s(t, leased(&job, r, "cluster-a", &node, "default")));
        // Armada compacts events of one job set into one sequence: assigned + running in one message.
        out.push((
            jobset.clone(),
            seq(queue, &jobset).at(t + 1, assigned(&job, r)).at(t + 2, running(&job, r, Some(&node))).encode(),
        ));
    };
    match i % 6 {
        0 | 1 => {
            start(&mut out, &run(1), t0 + 1);
            out.push(s(t0 + 20, run_succeeded(&job, &run(1))));
            out.push(s(t0 + 21, job_succeeded(&job)));
        }
        2 => {
            start(&mut out, &run(1), t0 + 1);
            let oom =
                error(true, pod_error("container main was OOMKilled", &node, &[137], "OOMKilled"), "oom", "limit");
            out.push(s(t0 + 15, run_errors(&job, &run(1), vec![oom.clone()])));
            out.push(s(t0 + 16, job_errors(&job, vec![oom])));
        }
        3 => {
            start(&mut out, &run(1), t0 + 1);
            out.push(s(t0 + 9, run_cancelled(&job, &run(1), "no longer needed", "alice")));
            out.push(s(t0 + 10, cancelled_job(&job, "no longer needed", "alice")));
        }
        4 => {
            let e = error(true, rejected("requested resources exceed the queue's limits"), "internal", "job-rejected");
            out.push(s(t0 + 1, job_errors(&job, vec![e])));
        }
        _ => {
            out.push(s(t0 + 1, leased(&job, &run(1), "cluster-a", &node, "default")));
            let returned = error(false, lease_returned("pod could not be scheduled", ""), "", "");
            out.push(s(t0 + 3, run_errors(&job, &run(1), vec![returned])));
            out.push(s(t0 + 4, requeued(&job)));
            start(&mut out, &run(2), t0 + 5);
            out.push(s(t0 + 8, run_preempted(&job, &run(2), "preempted by a higher-priority job", "01other", "")));
            out.push(s(t0 + 9, job_errors(&job, vec![error(true, preempted_error("preempted"), "", "")])));
        }
    }
    out
}

/// `jobs` jobs' messages interleaved in time like a live topic.
pub fn stream(tag: &str, jobs: usize, t0: i64) -> Vec<Keyed> {
    let mut timed: Vec<(i64, usize, usize, Keyed)> = Vec::new();
    for i in 0..jobs {
        let start = t0 + (i as i64) * 2;
        for (k, m) in job_messages(tag, i, start).into_iter().enumerate() {
            timed.push((start + k as i64 * 3, i, k, m));
        }
    }
    timed.sort_by_key(|(t, i, k, _)| (*t, *i, *k));
    timed.into_iter().map(|(_, _, _, m)| m).collect()
}

/// The same messages with a NUL byte in every sequence's user (`al\0ice`): the owner is stored as `alice` and the
/// original recorded in `lookout_ingester.sanitized_value`, once per message applied. A message applied twice (a
/// redelivery not skipped) leaves two rows, so any double application shows in the tables. Messages that do not
/// decode are left as they are.
pub fn witnessed(messages: Vec<Keyed>) -> Vec<Keyed> {
    use lookout_ingester::proto::armadaevents::EventSequence;
    use prost::Message as _;
    messages
        .into_iter()
        .map(|(key, payload)| match EventSequence::decode(payload.as_slice()) {
            Ok(mut seq) if !seq.events.is_empty() => {
                seq.user_id = lookout_ingester::proto::Bytes::from_static(b"al\0ice");
                (key, seq.encode_to_vec())
            }
            _ => (key, payload),
        })
        .collect()
}

/// Payloads only.
pub fn payloads(messages: &[Keyed]) -> Vec<Vec<u8>> {
    messages.iter().map(|(_, p)| p.clone()).collect()
}
