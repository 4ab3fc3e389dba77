//! What the service tests (`tests/service*.rs`) share: producers that publish whole entries or one message per
//! entry, convergence to the reference rows, and a small job stream spread over two partitions.

use std::time::Duration;

use lookout_ingester::message::MessageId;
use pulsar::{Producer, Pulsar, TokioExecutor};
use sqlx::PgPool;

use super::broker::{build_producer, producer_options, receipt_id, zlib};
use super::events::*;
use super::http::{http, poll_until};
use super::rows;
use super::snapshot::Snapshot;

pub use super::events::T0;
/// Longest a service test waits for a condition.
pub const WAIT: Duration = Duration::from_secs(90);

pub async fn get(app_addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http("GET", &format!("http://{app_addr}{path}"), None).await
}

// ------------------------------------------------------------------------------------------------ Pulsar

/// A producer on one partition of `topic`: batching (entries of up to 1000 messages) and zlib like Armada's
/// producers, or plain (one message per entry).
pub async fn producer(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    partition: u32,
    batched: bool,
) -> Producer<TokioExecutor> {
    let options = producer_options(batched.then_some(1000), batched.then(zlib));
    build_producer(client, &format!("{topic}-partition-{partition}"), options).await.expect("producer")
}

/// Publishes the messages as one producer batch (one entry) and returns each message's id.
pub async fn publish_entry(p: &mut Producer<TokioExecutor>, messages: &[Vec<u8>]) -> Vec<MessageId> {
    let mut receipts = Vec::new();
    for m in messages {
        receipts.push(p.send_non_blocking(m.clone()).await.expect("queue message"));
    }
    p.send_batch().await.expect("flush batch");
    let mut ids = Vec::new();
    for r in receipts {
        ids.push(receipt_id(r.await.expect("receipt")));
    }
    ids
}

/// Publishes each message on its own (one entry each, when the producer does not batch).
pub async fn publish_each(p: &mut Producer<TokioExecutor>, messages: &[Vec<u8>]) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for m in messages {
        let receipt = p.send_non_blocking(m.clone()).await.expect("send").await.expect("receipt");
        ids.push(receipt_id(receipt));
    }
    ids
}

// ------------------------------------------------------------------------------------------------ Postgres

/// Polls until the service's `job` and `job_run` rows equal `want`; on timeout fails showing the first difference.
pub async fn assert_rows_converge(pool: &PgPool, want: &Snapshot) {
    let want = &(want.jobs.clone(), want.runs.clone());
    let converged = poll_until(WAIT, || async move {
        let got = (rows::jobs(pool).await, rows::runs(pool).await);
        (&got == want).then_some(())
    })
    .await;
    if converged.is_some() {
        return;
    }
    let got = (rows::jobs(pool).await, rows::runs(pool).await);
    assert_eq!(got.0.len(), want.0.len(), "job rows");
    assert_eq!(got.1.len(), want.1.len(), "job_run rows");
    for (g, w) in got.0.iter().zip(&want.0) {
        assert_eq!(g, w, "job row differs from the reference");
    }
    for (g, w) in got.1.iter().zip(&want.1) {
        assert_eq!(g, w, "job_run row differs from the reference");
    }
}

// ------------------------------------------------------------------------------------------------ events

/// The messages of one job, as its producers would publish them (one message per step; step 2 is a compacted
/// sequence of two events). Every 5th job is cancelled while running, every 7th fails.
pub fn job_messages(i: usize) -> Vec<Vec<u8>> {
    let job = format!("job-{i:04}");
    let run = format!("00000000-0000-0000-0000-{i:012}");
    let js = format!("js-{}", i % 4);
    let t = T0 + i as i64 * 10;
    let s = || seq("queue-a", &js);
    let pod_spec = pod(&[("cpu", "250m"), ("memory", "512Mi")], Some("armada-default"));
    let mut out = vec![
        s().at(t, submit_job(&job, 3, Some(pod_spec), &[("armadaproject.io/team", "ml")])),
        s().at(t + 1, leased(&job, &run, "cluster-1", "node-1", "default")),
        s().at(t + 2, assigned(&job, &run)).at(t + 3, running(&job, &run, Some("node-1"))),
    ];
    if i.is_multiple_of(5) {
        out.push(s().at(t + 4, run_cancelled(&job, &run, "user", "alice")));
        out.push(s().at(t + 5, cancelled_job(&job, "user", "alice")));
    } else if i.is_multiple_of(7) {
        let err = error(true, pod_error("OOMKilled", "node-1", &[137], "debug"), "oom", "");
        out.push(s().at(t + 4, run_errors(&job, &run, vec![err.clone()])));
        out.push(s().at(t + 5, job_errors(&job, vec![err])));
    } else {
        out.push(s().at(t + 4, run_succeeded(&job, &run)));
        out.push(s().at(t + 5, job_succeeded(&job)));
    }
    out.iter().map(Seq::encode).collect()
}

/// Job `i` goes to partition `(i % 4) % 2` (its job set's partition).
pub fn partition_of(i: usize) -> u32 {
    ((i % 4) % 2) as u32
}
