//! Generates a realistic stream of Armada job-set events: jobs that succeed, fail with a category, are cancelled,
//! preempted, rejected, or retried after a lease return.
//!
//! ```text
//! cargo run --example sample_events -- --jobs 100 --file events.bin        # delimited records, for `apply`
//! cargo run --example sample_events -- --jobs 100 --pulsar pulsar://127.0.0.1:6650 --topic events
//! cargo run --example sample_events -- --jobs 100 --count                  # how many events that is
//! ```
//! Published messages are keyed by job set, routed to the job set's partition, and compressed with zlib in producer
//! batches, like Armada's producers.

#[path = "../tests/support/events.rs"]
#[allow(dead_code)]
mod events;

use events::*;
use lookout_ingester::proto::armadaevents::EventKind;

struct Args {
    jobs: usize,
    file: Option<String>,
    pulsar: Option<String>,
    topic: String,
    start: i64,
    count: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args { jobs: 50, file: None, pulsar: None, topic: "events".into(), start: 0, count: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--jobs" => a.jobs = value()?.parse().map_err(|e| format!("--jobs: {e}"))?,
            "--file" => a.file = Some(value()?),
            "--pulsar" => a.pulsar = Some(value()?),
            "--topic" => a.topic = value()?,
            "--start" => a.start = value()?.parse().map_err(|e| format!("--start: {e}"))?,
            "--count" => a.count = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !a.count && a.file.is_none() == a.pulsar.is_none() {
        return Err("give exactly one of --file PATH or --pulsar URL".into());
    }
    Ok(a)
}

/// The messages of one job's life, as (job set, encoded EventSequence), in publish order.
fn job_messages(i: usize, t0: i64, stream_id: i64) -> Vec<(String, Vec<u8>)> {
    let queue = ["research", "batch", "gpu-train"][i % 3];
    let jobset = format!("{queue}-set-{}", i / 10);
    // Ids are unique per generated stream (its start time), so running the generator again adds new jobs.
    let job = format!("01s{stream_id:08x}{i:0>16}");
    let run = |n: usize| format!("{stream_id:08x}-0000-4000-8000-{:0>12}", i * 10 + n);
    let node = format!("node-{}", i % 7);
    let s = |t: i64, kind: EventKind| (jobset.clone(), seq(queue, &jobset).at(t, kind).encode());
    let pod_spec = pod(
        &[("cpu", ["500m", "2", "1.5"][i % 3]), ("memory", ["1Gi", "512Mi", "4Gi"][i % 3])],
        Some("armada-default"),
    );
    let mut out = vec![s(
        t0,
        submit_job(&job, (i % 5) as u32, Some(pod_spec), &[("armadaproject.io/team", "ml"), ("owner-id", "42")]),
    )];
    let start = |out: &mut Vec<(String, Vec<u8>)>, r: &str, t: i64| {
        out.push(s(t, leased(&job, r, "cluster-a", &node, "default")));
        out.push(s(t + 1, assigned(&job, r)));
        out.push(s(t + 2, running(&job, r, Some(&node))));
    };
    match i % 6 {
        0 | 1 => {
            start(&mut out, &run(1), t0 + 1);
            out.push(s(t0 + 20, run_succeeded(&job, &run(1))));
            out.push(s(t0 + 21, job_succeeded(&job)));
        }
        2 => {
            start(&mut out, &run(1), t0 + 1);
            let oom = error(
                true,
                pod_error("container main was OOMKilled", &node, &[137], "pod events: OOMKilled"),
                "oom",
                "container-limit",
            );
            out.push(s(t0 + 15, run_errors(&job, &run(1), vec![oom.clone()])));
            out.push(s(t0 + 16, job_errors(&job, vec![oom])));
        }
        3 => {
            start(&mut out, &run(1), t0 + 1);
            out.push(s(t0 + 9, run_cancelled(&job, &run(1), "no longer needed", "alice")));
            out.push(s(t0 + 10, cancelled_job(&job, "no longer needed", "alice")));
        }
        4 => {
            out.push(s(
                t0 + 1,
                job_errors(
                    &job,
                    vec![error(
                        true,
                        rejected("requested resources exceed the queue's limits"),
                        "internal",
                        "job-rejected",
                    )],
                ),
            ));
        }
        _ => {
            out.push(s(t0 + 1, leased(&job, &run(1), "cluster-a", &node, "default")));
            out.push(s(
                t0 + 3,
                run_errors(&job, &run(1), vec![error(true, lease_returned("pod could not be scheduled", ""), "", "")]),
            ));
            out.push(s(t0 + 4, requeued(&job)));
            start(&mut out, &run(2), t0 + 5);
            out.push(s(t0 + 8, run_preempted(&job, &run(2), "preempted by a higher-priority job", "01other", "")));
            out.push(s(t0 + 9, job_errors(&job, vec![error(true, preempted_error("preempted"), "", "")])));
        }
    }
    out
}

/// All jobs' messages, interleaved in time like a live partition.
fn stream(jobs: usize, start: i64) -> Vec<(String, Vec<u8>)> {
    let mut timed: Vec<(i64, usize, (String, Vec<u8>))> = Vec::new();
    for i in 0..jobs {
        let t0 = start + (i as i64) * 2;
        for (k, m) in job_messages(i, t0, start).into_iter().enumerate() {
            timed.push((t0 + k as i64 * 3, i, m));
        }
    }
    timed.sort_by_key(|(t, i, _)| (*t, *i));
    timed.into_iter().map(|(_, _, m)| m).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sample_events: {e}");
            std::process::exit(2);
        }
    };
    let start = if a.start > 0 { a.start } else { chrono::Utc::now().timestamp() - 3600 };
    let messages = stream(a.jobs, start);
    if a.count {
        // Every message holds one event.
        println!("{}", messages.len());
        return;
    }
    if let Some(path) = &a.file {
        let payloads: Vec<Vec<u8>> = messages.into_iter().map(|(_, m)| m).collect();
        std::fs::write(path, delimited(&payloads)).expect("write the file");
        eprintln!("wrote {} message(s) for {} job(s) to {path}", payloads.len(), a.jobs);
        return;
    }
    let url = a.pulsar.expect("checked in args()");
    if let Err(e) = publish(&url, &a.topic, messages).await {
        eprintln!("sample_events: {e}");
        std::process::exit(1);
    }
}

async fn publish(url: &str, topic: &str, messages: Vec<(String, Vec<u8>)>) -> Result<(), pulsar::Error> {
    use pulsar::{Pulsar, TokioExecutor, producer};
    let client: Pulsar<_> = Pulsar::builder(url, TokioExecutor).build().await?;
    let mut producer = client
        .producer()
        .with_topic(topic)
        .with_name(format!("sample-events-{}", std::process::id()))
        .with_options(producer::ProducerOptions {
            compression: Some(pulsar::compression::Compression::Zlib(pulsar::compression::CompressionZlib::default())),
            batch_size: Some(100),
            // Keyed messages go to the partition of their key (the job set), as with Armada's producers; without a
            // policy the client spreads them round-robin.
            routing_policy: Some(pulsar::routing_policy::RoutingPolicy::RoundRobin),
            ..Default::default()
        })
        .build()
        .await?;
    let n = messages.len();
    let mut receipts = Vec::with_capacity(n);
    for (key, payload) in messages {
        let msg = producer::Message { payload, partition_key: Some(key), ..Default::default() };
        receipts.push(producer.send_non_blocking(msg).await?);
    }
    producer.send_batch().await?;
    for r in receipts {
        r.await?;
    }
    eprintln!("published {n} message(s) to {topic}");
    Ok(())
}
