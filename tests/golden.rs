//! Golden tests: the worked examples of docs/compatibility.md §8, applied with `apply` (decode → convert → store) to a fresh
//! database, asserting the exact rows.

mod support;

use lookout_ingester::apply::Summary;
use support::events::*;
use support::rows::{self, Run, ts};

/// Applies messages like `apply` does; `batch_events` bounds each batch.
async fn apply(db: &support::db::TestDb, messages: &[Vec<u8>], batch_events: usize) -> Summary {
    support::ingest::ingest(&db.url, messages, batch_events).await
}

fn happy_path(job: &str, run: &str) -> Vec<Seq> {
    vec![
        seq("q", "js").at(
            T0,
            submit_job(
                job,
                5,
                Some(pod(&[("cpu", "1.5"), ("memory", "1Gi"), ("nvidia.com/gpu", "1")], Some("high"))),
                &[("armadaproject.io/team", "a")],
            ),
        ),
        seq("q", "js").at(T0 + 1, leased(job, run, "cluster-1", "node-a", "pool-1")),
        seq("q", "js").at(T0 + 2, assigned(job, run)),
        seq("q", "js").at(T0 + 3, running(job, run, Some("node-n"))),
        seq("q", "js").at(T0 + 4, run_succeeded(job, run)),
        seq("q", "js").at(T0 + 5, job_succeeded(job)),
    ]
}

fn encode(seqs: &[Seq]) -> Vec<Vec<u8>> {
    seqs.iter().map(Seq::encode).collect()
}

async fn assert_happy_path(db: &support::db::TestDb, job: &str, run: &str) {
    let j = rows::job(&db.pool, job).await;
    assert_eq!(j.state, 4);
    assert_eq!(j.submitted, ts(T0));
    assert_eq!(j.last_transition_time, ts(T0 + 5));
    assert_eq!(j.last_transition_time_seconds, T0 + 5);
    assert_eq!(j.latest_run_id.as_deref(), Some(run));
    assert_eq!((j.cpu, j.memory, j.ephemeral_storage, j.gpu), (1500, 1 << 30, 0, 1));
    assert_eq!((j.queue.as_str(), j.jobset.as_str(), j.owner.as_str()), ("q", "js", "alice"));
    assert_eq!(j.priority, 5);
    assert_eq!(j.priority_class.as_deref(), Some("high"));
    assert_eq!(j.namespace.as_deref(), Some("default"));
    assert_eq!(j.annotations, serde_json::json!({"team": "a"}));
    assert_eq!(j.cancelled, None);
    let r = rows::run(&db.pool, run).await;
    assert_eq!(
        r,
        Run {
            run_id: run.into(),
            job_id: job.into(),
            cluster: "cluster-1".into(),
            node: Some("node-n".into()),
            pending: Some(ts(T0 + 2)),
            started: Some(ts(T0 + 3)),
            finished: Some(ts(T0 + 4)),
            state: 3,
            error: None,
            exit_code: Some(0),
            leased: Some(ts(T0 + 1)),
            debug: None,
            pool: Some("pool-1".into()),
            ingress_addresses: None,
            failure_category: None,
            failure_subcategory: None,
            termination_reason: None,
        }
    );
}

#[tokio::test]
async fn example_1_happy_path_in_one_batch() {
    let db = support::db::TestDb::migrated().await;
    let s = apply(&db, &encode(&happy_path("job1", "run1")), 10_000).await;
    assert_eq!(s.batches, 1);
    assert_happy_path(&db, "job1", "run1").await;
    assert!(rows::job_spec(&db.pool, "job1").await.is_some());
}

#[tokio::test]
async fn example_1_happy_path_one_event_per_batch() {
    let db = support::db::TestDb::migrated().await;
    let s = apply(&db, &encode(&happy_path("job1", "run1")), 1).await;
    assert_eq!(s.batches, 6);
    assert_happy_path(&db, "job1", "run1").await;
}

fn first_four(job: &str, run: &str) -> Vec<Seq> {
    happy_path(job, run).into_iter().take(4).collect()
}

#[tokio::test]
async fn example_2_cancel_while_running_and_2b_late_running() {
    let db = support::db::TestDb::migrated().await;
    let mut seqs = first_four("job2", "run2");
    seqs.push(seq("q", "js").at(T0 + 4, run_cancelled("job2", "run2", "user asked", "bob")));
    seqs.push(seq("q", "js").at(T0 + 5, cancelled_job("job2", "user asked", "bob")));
    apply(&db, &encode(&seqs), 10_000).await;
    let check = |j: rows::Job, r: Run| {
        assert_eq!(j.state, 6);
        assert_eq!(j.cancelled, Some(ts(T0 + 5)));
        assert_eq!(j.cancel_reason.as_deref(), Some("user asked"));
        assert_eq!(j.cancel_user.as_deref(), Some("bob"));
        assert_eq!(j.last_transition_time, ts(T0 + 5));
        assert_eq!(r.state, 12);
        assert_eq!(r.finished, Some(ts(T0 + 4)));
        assert_eq!(
            r.termination_reason,
            Some(serde_json::json!({"reason": "user asked", "args": {"requestor": "bob"}}))
        );
    };
    check(rows::job(&db.pool, "job2").await, rows::run(&db.pool, "run2").await);
    let before = (rows::job(&db.pool, "job2").await, rows::run(&db.pool, "run2").await);
    // 2b: a late JobRunRunning (created t3) in a later batch changes nothing.
    apply(&db, &encode(&[seq("q", "js").at(T0 + 3, running("job2", "run2", Some("node-n")))]), 10_000).await;
    let after = (rows::job(&db.pool, "job2").await, rows::run(&db.pool, "run2").await);
    assert_eq!(before, after);
    check(after.0, after.1);
}

#[tokio::test]
async fn example_3_preemption() {
    let db = support::db::TestDb::migrated().await;
    let mut seqs = first_four("job3", "run3");
    seqs.push(seq("q", "js").at(T0 + 4, run_preempted("job3", "run3", "preempted by higher priority", "job9", "")));
    seqs.push(
        seq("q", "js").at(T0 + 5, run_errors("job3", "run3", vec![error(true, preempted_error("preempted"), "", "")])),
    );
    seqs.push(seq("q", "js").at(T0 + 6, job_errors("job3", vec![error(true, preempted_error("preempted"), "", "")])));
    apply(&db, &encode(&seqs), 10_000).await;
    let j = rows::job(&db.pool, "job3").await;
    assert_eq!(j.state, 7);
    assert_eq!(j.last_transition_time, ts(T0 + 6));
    let r = rows::run(&db.pool, "run3").await;
    assert_eq!(r.state, 6);
    assert_eq!(r.finished, Some(ts(T0 + 4)));
    assert_eq!(r.error.as_deref(), Some("preempted by higher priority"));
    assert_eq!(
        r.termination_reason,
        Some(
            serde_json::json!({"reason": "preempted by higher priority", "args": {"preemptingJobId": "job9", "requestor": "alice"}})
        )
    );
    // No later event changes it: a success arriving afterwards is ignored.
    apply(&db, &encode(&[seq("q", "js").at(T0 + 7, job_succeeded("job3"))]), 10_000).await;
    assert_eq!(rows::job(&db.pool, "job3").await.state, 7);
}

#[tokio::test]
async fn example_4_rejection_keeps_job_level_category() {
    let db = support::db::TestDb::migrated().await;
    let seqs = vec![
        seq("q", "js").at(T0, submit_job("job4", 1, Some(pod(&[("cpu", "1")], None)), &[])),
        seq("q", "js")
            .at(T0 + 1, job_errors("job4", vec![error(true, rejected("queue is full"), "internal", "job-rejected")])),
    ];
    apply(&db, &encode(&seqs), 10_000).await;
    let j = rows::job(&db.pool, "job4").await;
    assert_eq!(j.state, 9);
    assert_eq!(j.last_transition_time, ts(T0 + 1));
    assert_eq!(j.failure_category.as_deref(), Some("internal"));
    assert_eq!(j.failure_subcategory.as_deref(), Some("job-rejected"));
    assert_eq!(j.failure_reason.as_deref(), Some("jobRejected"));
    assert_eq!(j.failure_message.as_deref(), Some("queue is full"));
    assert_eq!(rows::job_error(&db.pool, "job4").await.as_deref(), Some("queue is full"));
    assert!(rows::runs(&db.pool).await.is_empty());
}

#[tokio::test]
async fn example_5_retry_after_lease_return() {
    let db = support::db::TestDb::migrated().await;
    let seqs = vec![
        seq("q", "js").at(T0, submit_job("job5", 1, Some(pod(&[("cpu", "1")], None)), &[])),
        seq("q", "js").at(T0 + 1, leased("job5", "r1", "c1", "n1", "p")),
        seq("q", "js")
            .at(T0 + 2, run_errors("job5", "r1", vec![error(true, lease_returned("pod could not start", ""), "", "")])),
        seq("q", "js").at(T0 + 3, requeued("job5")),
        seq("q", "js").at(T0 + 4, leased("job5", "r2", "c1", "n2", "p")),
        seq("q", "js").at(T0 + 5, running("job5", "r2", Some("n2"))),
        seq("q", "js").at(T0 + 6, run_succeeded("job5", "r2")),
        seq("q", "js").at(T0 + 7, job_succeeded("job5")),
    ];
    for batch in [10_000, 1] {
        let db2 = support::db::TestDb::migrated().await;
        apply(&db2, &encode(&seqs), batch).await;
        let j = rows::job(&db2.pool, "job5").await;
        assert_eq!((j.state, j.latest_run_id.as_deref()), (4, Some("r2")), "batch size {batch}");
        assert_eq!(rows::run(&db2.pool, "r1").await.state, 8);
        assert_eq!(rows::run(&db2.pool, "r1").await.error.as_deref(), Some("pod could not start"));
        assert_eq!(rows::run(&db2.pool, "r2").await.state, 3);
    }
    drop(db);
}

#[tokio::test]
async fn example_6_failure_with_category() {
    let db = support::db::TestDb::migrated().await;
    let mut seqs = first_four("job6", "run6");
    seqs.push(seq("q", "js").at(
        T0 + 4,
        run_errors(
            "job6",
            "run6",
            vec![error(
                true,
                pod_error("OOMKilled: container exceeded its memory limit", "node-2", &[0, 137], "dbg"),
                "oom",
                "container-limit",
            )],
        ),
    ));
    seqs.push(seq("q", "js").at(
        T0 + 5,
        job_errors("job6", vec![error(true, pod_error("failed", "node-2", &[137], ""), "oom", "container-limit")]),
    ));
    apply(&db, &encode(&seqs), 10_000).await;
    assert_eq!(rows::job(&db.pool, "job6").await.state, 5);
    let r = rows::run(&db.pool, "run6").await;
    assert_eq!(r.state, 4);
    assert_eq!(r.finished, Some(ts(T0 + 4)));
    assert_eq!(r.exit_code, Some(137));
    assert_eq!(r.node.as_deref(), Some("node-2"));
    assert_eq!(r.failure_category.as_deref(), Some("oom"));
    assert_eq!(r.failure_subcategory.as_deref(), Some("container-limit"));
    assert_eq!(r.error.as_deref(), Some("OOMKilled: container exceeded its memory limit"));
    assert_eq!(r.debug.as_deref(), Some("dbg"));
}

#[tokio::test]
async fn example_7_non_terminal_run_error_sets_no_category_nor_finished() {
    let db = support::db::TestDb::migrated().await;
    let mut seqs = first_four("job7", "run7");
    seqs.push(seq("q", "js").at(
        T0 + 4,
        run_errors("job7", "run7", vec![error(false, pod_error("transient", "node-2", &[1], ""), "oom", "x")]),
    ));
    apply(&db, &encode(&seqs), 10_000).await;
    let r = rows::run(&db.pool, "run7").await;
    assert_eq!(r.state, 2, "non-terminal error changes no state");
    assert_eq!(r.finished, None);
    assert_eq!(r.failure_category, None);
    assert_eq!(r.failure_subcategory, None);
    assert_eq!(r.error.as_deref(), Some("transient"), "recorded without a state change");
}

#[tokio::test]
async fn example_8_duplicates_in_two_batches() {
    let db = support::db::TestDb::migrated().await;
    let once = encode(&happy_path("job8", "run8"));
    let mut twice = once.clone();
    twice.extend(once.clone());
    apply(&db, &twice, 6).await;
    assert_happy_path(&db, "job8", "run8").await;
    // And a replay of the whole stream later changes nothing.
    let before = (rows::jobs(&db.pool).await, rows::runs(&db.pool).await);
    apply(&db, &once, 2).await;
    assert_eq!(before, (rows::jobs(&db.pool).await, rows::runs(&db.pool).await));
}

#[tokio::test]
async fn example_9_out_of_order_inside_one_message() {
    let db = support::db::TestDb::migrated().await;
    let msg = seq("q", "js")
        .at(
            T0,
            submit_job(
                "job9",
                5,
                Some(pod(&[("cpu", "1.5"), ("memory", "1Gi"), ("nvidia.com/gpu", "1")], Some("high"))),
                &[("armadaproject.io/team", "a")],
            ),
        )
        .at(T0 + 1, leased("job9", "run9", "cluster-1", "node-a", "pool-1"))
        .at(T0 + 2, assigned("job9", "run9"))
        .at(T0 + 4, run_succeeded("job9", "run9"))
        .at(T0 + 3, running("job9", "run9", Some("node-n")))
        .at(T0 + 5, job_succeeded("job9"));
    apply(&db, &[msg.encode()], 10_000).await;
    assert_happy_path(&db, "job9", "run9").await;
}

#[tokio::test]
async fn replaying_an_old_requeue_does_not_requeue_the_current_run() {
    let db = support::db::TestDb::migrated().await;
    let first_run = vec![
        seq("q", "js").at(T0, submit_job("jobr", 1, Some(pod(&[("cpu", "1")], None)), &[])),
        seq("q", "js").at(T0 + 1, leased("jobr", "r1", "c1", "n1", "p")),
        seq("q", "js").at(T0 + 2, run_errors("jobr", "r1", vec![error(true, lease_returned("no", ""), "", "")])),
        seq("q", "js").at(T0 + 3, requeued("jobr")),
    ];
    let second_run = vec![
        seq("q", "js").at(T0 + 4, leased("jobr", "r2", "c1", "n2", "p")),
        seq("q", "js").at(T0 + 5, running("jobr", "r2", Some("n2"))),
    ];
    apply(&db, &encode(&first_run), 10_000).await;
    apply(&db, &encode(&second_run), 10_000).await;
    let before = rows::job(&db.pool, "jobr").await;
    assert_eq!((before.state, before.latest_run_id.as_deref()), (3, Some("r2")));
    // A replay of the older part of the stream (one event per batch, and all at once) is a no-op.
    apply(&db, &encode(&first_run), 1).await;
    apply(&db, &encode(&first_run), 10_000).await;
    apply(&db, &encode(&[first_run[3].clone()]), 10_000).await;
    assert_eq!(rows::job(&db.pool, "jobr").await, before);
}
