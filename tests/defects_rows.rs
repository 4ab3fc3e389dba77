//! Defects of the reference ingester (docs/compatibility.md §6) about what a valid stream writes, one test per
//! defect, named after it: in any order, replayed, redelivered or folded into one batch, with parents arriving late,
//! a stream leaves the rows it means and every column it carries. Each feeds the input that makes the reference go
//! wrong and asserts what must happen instead; against the real Postgres, through `apply`. (D12: the guard lives
//! inside the UPDATE, exercised by every test here; D21–D23 are covered by the service tests, config tests and batch
//! unit tests. Malformed input and failing writes: `defects_failures.rs`.)

mod support;

use lookout_ingester::convert::Converter;
use support::defects::{T0, run_to_running, submit};
use support::events::*;
use support::ingest::{ingest, ingest_with};
use support::rows::{self, ts};

#[tokio::test]
async fn d01_zombie_jobs_late_job_events_never_reopen_a_finished_job() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(seq("q", "js").at(T0 + 4, run_succeeded("j", "r")).encode());
    msgs.push(seq("q", "js").at(T0 + 5, job_succeeded("j")).encode());
    ingest(&db.url, &msgs, 10_000).await;
    let done = rows::job(&db.pool, "j").await;
    // Late, redelivered job-moving events, each in its own batch.
    for late in [
        leased("j", "r", "c", "n1", "p"),
        assigned("j", "r"),
        running("j", "r", Some("n1")),
        requeued("j"),
        cancelled_job("j", "late", "x"),
    ] {
        ingest(&db.url, &[seq("q", "js").at(T0 + 3, late).encode()], 10).await;
    }
    assert_eq!(rows::job(&db.pool, "j").await, done);
    assert_eq!(done.state, 4);
}

#[tokio::test]
async fn d02_runs_never_regress_from_an_end_state() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(
        seq("q", "js")
            .at(T0 + 4, run_errors("j", "r", vec![error(true, pod_error("boom", "n1", &[2], ""), "", "")]))
            .encode(),
    );
    ingest(&db.url, &msgs, 10_000).await;
    let ended = rows::run(&db.pool, "r").await;
    for late in [running("j", "r", Some("elsewhere")), assigned("j", "r"), leased("j", "r", "c2", "n9", "p2")] {
        ingest(&db.url, &[seq("q", "js").at(T0 + 2, late).encode()], 10).await;
    }
    let r = rows::run(&db.pool, "r").await;
    assert_eq!(r, ended);
    assert_eq!((r.state, r.node.as_deref(), r.started), (4, Some("n1"), Some(ts(T0 + 3))));
}

#[tokio::test]
async fn d03_latest_run_id_never_rewinds_to_an_older_run() {
    let db = support::db::TestDb::migrated().await;
    let msgs = vec![
        seq("q", "js").at(T0, submit("j")).encode(),
        seq("q", "js").at(T0 + 1, leased("j", "r1", "c", "n", "p")).encode(),
        seq("q", "js").at(T0 + 2, run_errors("j", "r1", vec![error(true, lease_returned("x", ""), "", "")])).encode(),
        seq("q", "js").at(T0 + 3, requeued("j")).encode(),
        seq("q", "js").at(T0 + 4, leased("j", "r2", "c", "n", "p")).encode(),
    ];
    ingest(&db.url, &msgs, 10_000).await;
    ingest(
        &db.url,
        &[seq("q", "js").at(T0 + 2, assigned("j", "r1")).at(T0 + 3, running("j", "r1", None)).encode()],
        10,
    )
    .await;
    let j = rows::job(&db.pool, "j").await;
    assert_eq!(
        (j.latest_run_id.as_deref(), j.state, j.last_transition_time.as_str()),
        (Some("r2"), 8, ts(T0 + 4).as_str())
    );
}

#[tokio::test]
async fn d04_replaying_any_prefix_of_the_stream_is_a_no_op() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(seq("q", "js").at(T0 + 4, reprioritised("j", 5)).encode());
    msgs.push(seq("q", "js").at(T0 + 5, run_cancelled("j", "r", "stop", "bob")).encode());
    msgs.push(seq("q", "js").at(T0 + 6, cancelled_job("j", "stop", "bob")).encode());
    ingest(&db.url, &msgs, 10_000).await;
    let expected = (rows::jobs(&db.pool).await, rows::runs(&db.pool).await);
    for n in 1..=msgs.len() {
        ingest(&db.url, &msgs[..n], 3).await;
        assert_eq!(
            (rows::jobs(&db.pool).await, rows::runs(&db.pool).await),
            expected,
            "replaying the first {n} messages"
        );
    }
}

/// A batch that creates a job and a run that are stored already (a replay from an older position that reaches
/// further than before) together with the events that follow them: nothing is inserted twice, and the following
/// events apply to the stored rows exactly as when each arrives in a batch of its own.
#[tokio::test]
async fn d04_a_replay_that_recreates_stored_rows_still_applies_what_follows() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(seq("q", "js").at(T0 + 4, reprioritised("j", 5)).encode());
    msgs.push(
        seq("q", "js")
            .at(T0 + 5, run_errors("j", "r", vec![error(true, pod_error("oom", "n1", &[137], ""), "OOM", "")]))
            .encode(),
    );
    msgs.push(
        seq("q", "js")
            .at(T0 + 6, job_errors("j", vec![error(true, pod_error("oom", "n1", &[137], ""), "", "")]))
            .encode(),
    );
    // One event per batch: every event after the lease is merged with the stored rows in SQL.
    ingest(&db.url, &msgs, 1).await;
    let expected = (rows::jobs(&db.pool).await, rows::runs(&db.pool).await);
    assert_eq!((expected.0[0].state, expected.1[0].state), (5, 4), "{expected:?}");

    let again = support::db::TestDb::migrated().await;
    // The submit and lease first; then all of it again in one batch, which creates both rows anew.
    ingest(&again.url, &msgs[..2], 10_000).await;
    ingest(&again.url, &msgs, 10_000).await;
    assert_eq!((rows::jobs(&again.pool).await, rows::runs(&again.pool).await), expected);
}

/// New rows are COPYed straight into their tables unless their key is stored; a key that is stored although the
/// probe did not see it (here: a spec left without its job; in production, a row a concurrent writer inserted in
/// between) must not fail or skip the batch: the new rows are then inserted by statement, skipping what exists.
#[tokio::test]
async fn d04_a_new_row_whose_key_appeared_meanwhile_is_skipped_not_failed() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(seq("q", "js").at(T0 + 4, run_succeeded("j", "r")).encode());
    msgs.push(seq("q", "js").at(T0 + 5, job_succeeded("j")).encode());
    msgs.extend(run_to_running("k", "s"));
    ingest(&db.url, &msgs, 10_000).await;
    let expected = (rows::jobs(&db.pool).await, rows::runs(&db.pool).await);

    let again = support::db::TestDb::migrated().await;
    // A spec of the right shape (an empty api.Job, zlib-compressed), left without its job.
    let mut spec = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut spec, b"").unwrap();
    sqlx::query("INSERT INTO job_spec (job_id, job_spec) VALUES ('j', $1)")
        .bind(spec.finish().unwrap())
        .execute(&again.pool)
        .await
        .unwrap();
    let summary = ingest(&again.url, &msgs, 10_000).await;
    assert_eq!((rows::jobs(&again.pool).await, rows::runs(&again.pool).await), expected);
    assert_eq!(rows::job_spec(&again.pool, "j").await.as_deref(), Some(&[][..]), "the stored spec stays");
    assert!(rows::job_spec(&again.pool, "k").await.is_some());
    let quarantined = rows::count(&again.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await;
    assert_eq!(quarantined, 0, "{summary:?}");
}

/// Two runs leased at the same instant: the tie is broken by run id, byte by byte, whether the rows are settled in
/// memory (one batch) or merged in SQL (a batch per event), in either order, also in a database whose collation
/// sorts "a" before "B" (ICU en-US; byte order puts "B" first).
#[tokio::test]
async fn d03_a_lease_time_tie_is_broken_by_run_id_byte_by_byte_in_any_collation() {
    let submit = seq("q", "js").at(T0, submit("j")).encode();
    let lease = |run: &str| seq("q", "js").at(T0 + 1, leased("j", run, "c", "n1", "p")).encode();
    let orders = [[lease("a-run"), lease("B-run")], [lease("B-run"), lease("a-run")]];
    for (order, leases) in orders.iter().enumerate() {
        for batch in [10_000, 1] {
            let db =
                support::db::TestDb::migrated_with("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' TEMPLATE template0").await;
            let mut msgs = vec![submit.clone()];
            msgs.extend(leases.iter().cloned());
            ingest(&db.url, &msgs, batch).await;
            let job = rows::job(&db.pool, "j").await;
            assert_eq!(job.latest_run_id.as_deref(), Some("a-run"), "order {order}, batches of {batch} events");
        }
    }
}

#[tokio::test]
async fn d09_empty_strings_never_erase_stored_values() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(seq("q", "js").at(T0 + 4, debug_info("j", "r", "{\"schemaVersion\":1}")).encode());
    msgs.push(
        seq("q", "js")
            .at(T0 + 5, run_errors("j", "r", vec![error(true, pod_error("", "", &[1], ""), "", "")]))
            .encode(),
    );
    msgs.push(seq("q", "js").at(T0 + 6, run_preempted("j", "r", "", "", "")).encode());
    ingest(&db.url, &msgs, 1).await;
    let r = rows::run(&db.pool, "r").await;
    assert_eq!(r.debug.as_deref(), Some("{\"schemaVersion\":1}"));
    assert_eq!(r.error, None, "an empty message is no value");
    assert_eq!(r.node.as_deref(), Some("n1"));
}

#[tokio::test]
async fn d11_conflation_keeps_every_column() {
    let db = support::db::TestDb::migrated().await;
    // All in one batch: the cancel's reason and user, and the run's pending time, must survive folding.
    let msg = seq("q", "js")
        .at(T0, submit("j"))
        .at(T0 + 1, leased("j", "r", "c", "n", "p"))
        .at(T0 + 2, assigned("j", "r"))
        .at(T0 + 3, running("j", "r", Some("n")))
        .at(T0 + 4, reprioritised("j", 3))
        .at(T0 + 5, run_cancelled("j", "r", "why", "who"))
        .at(T0 + 6, cancelled_job("j", "why", "who"))
        .encode();
    ingest(&db.url, &[msg], 10_000).await;
    let j = rows::job(&db.pool, "j").await;
    assert_eq!(
        (j.state, j.cancel_reason.as_deref(), j.cancel_user.as_deref(), j.priority),
        (6, Some("why"), Some("who"), 3)
    );
    let r = rows::run(&db.pool, "r").await;
    assert_eq!((r.pending, r.started, r.finished), (Some(ts(T0 + 2)), Some(ts(T0 + 3)), Some(ts(T0 + 5))));
}

#[tokio::test]
async fn d15_non_terminal_run_errors_change_no_state() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = run_to_running("j", "r");
    msgs.push(
        seq("q", "js")
            .at(T0 + 4, run_errors("j", "r", vec![error(false, lease_returned("retrying", ""), "c", "s")]))
            .encode(),
    );
    ingest(&db.url, &msgs, 10).await;
    let r = rows::run(&db.pool, "r").await;
    assert_eq!((r.state, r.finished, r.failure_category), (2, None, None));
}

#[tokio::test]
async fn d16_job_level_failure_information_is_kept() {
    let db = support::db::TestDb::migrated().await;
    let mut e = error(true, max_runs("job exceeded 3 runs"), "internal", "max-runs-exceeded");
    e.retry_policy_name = b("retry-3");
    let msgs = vec![seq("q", "js").at(T0, submit("j")).at(T0 + 9, job_errors("j", vec![e])).encode()];
    ingest(&db.url, &msgs, 10).await;
    let j = rows::job(&db.pool, "j").await;
    assert_eq!(j.state, 5);
    assert_eq!(
        (j.failure_category.as_deref(), j.failure_subcategory.as_deref()),
        (Some("internal"), Some("max-runs-exceeded"))
    );
    assert_eq!(
        (j.failure_reason.as_deref(), j.failure_message.as_deref()),
        (Some("maxRunsExceeded"), Some("job exceeded 3 runs"))
    );
}

#[tokio::test]
async fn d19_identical_input_gives_identical_rows() {
    let msgs = vec![
        seq("q", "js")
            .at(
                T0,
                submit_job(
                    "j",
                    1,
                    Some(pod(&[("cpu", "1")], None)),
                    &[("armadaproject.io/x", "prefixed"), ("x", "plain"), ("y", "1")],
                ),
            )
            .at(T0 + 1, leased("j", "r", "c", "n", "p"))
            .encode(),
    ];
    let mut results = Vec::new();
    for _ in 0..2 {
        let db = support::db::TestDb::migrated().await;
        ingest(&db.url, &msgs, 10).await;
        results.push((rows::jobs(&db.pool).await, rows::runs(&db.pool).await, rows::job_spec(&db.pool, "j").await));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].0[0].annotations, serde_json::json!({"x": "prefixed", "y": "1"}));
}

#[tokio::test]
async fn d20_updates_for_missing_parents_are_parked_counted_and_reapplied() {
    let db = support::db::TestDb::migrated().await;
    // The executor's events overtake the lease (other path), and an event for a job nobody submitted.
    let early = vec![
        seq("q", "js").at(T0, submit("j")).encode(),
        seq("q", "js").at(T0 + 2, assigned("j", "r")).at(T0 + 3, running("j", "r", Some("n"))).encode(),
        seq("q", "js").at(T0 + 5, job_succeeded("ghost")).encode(),
    ];
    let s = ingest(&db.url, &early, 10_000).await;
    assert_eq!(s.parked, 3);
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event").await, 3);
    assert_eq!(rows::job(&db.pool, "j").await.state, 1);
    let s = ingest(&db.url, &[seq("q", "js").at(T0 + 1, leased("j", "r", "c", "n", "p")).encode()], 10).await;
    assert_eq!(s.unparked, 2);
    let j = rows::job(&db.pool, "j").await;
    assert_eq!(
        (j.state, j.latest_run_id.as_deref(), j.last_transition_time.as_str()),
        (3, Some("r"), ts(T0 + 3).as_str())
    );
    let r = rows::run(&db.pool, "r").await;
    assert_eq!((r.state, r.pending, r.started), (2, Some(ts(T0 + 2)), Some(ts(T0 + 3))));
    let left: Vec<(String, String, String)> =
        sqlx::query_as("SELECT job_id, waits_for, event_kind FROM lookout_ingester.parked_event")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![("ghost".to_string(), "job".to_string(), "jobSucceeded".to_string())]);
}

#[tokio::test]
async fn annotation_blocklist_and_prefix_from_configuration() {
    let db = support::db::TestDb::migrated().await;
    let conv = Converter {
        annotation_prefix: Some("corp.io/".into()),
        annotation_blocklist: vec!["corp.io/secret".into()],
        ..Default::default()
    };
    let msgs = vec![
        seq("q", "js")
            .at(
                T0,
                submit_job(
                    "j",
                    1,
                    None,
                    &[("corp.io/team", "a"), ("Corp.io/Secret", "s"), ("armadaproject.io/x", "y")],
                ),
            )
            .encode(),
    ];
    ingest_with(&db.url, &msgs, 10, conv).await;
    assert_eq!(rows::job(&db.pool, "j").await.annotations, serde_json::json!({"team": "a", "armadaproject.io/x": "y"}));
}
