//! One test per defect of the reference ingester (docs/compatibility.md §6) that the ingestion core can reproduce, named after it.
//! Each feeds the input that makes the reference go wrong and asserts what must happen instead. Against the real
//! Postgres, through `apply`. (D12: the guard lives inside the UPDATE, exercised by every test here; D21–D23 are
//! covered by the service tests, config tests and batch unit tests.)

mod support;

use std::time::Duration;

use lookout_ingester::convert::Converter;
use lookout_ingester::proto::armadaevents::{EventKind, KubernetesObject, kubernetes_object};
use support::events::*;
use support::ingest::{ingest, ingest_with};
use support::rows::{self, ts};

const T0: i64 = 1_700_000_000;

fn submit(job: &str) -> EventKind {
    submit_job(job, 1, Some(pod(&[("cpu", "1")], None)), &[])
}

fn run_to_running(job: &str, run: &str) -> Vec<Vec<u8>> {
    vec![
        seq("q", "js").at(T0, submit(job)).encode(),
        seq("q", "js").at(T0 + 1, leased(job, run, "c", "n1", "p")).encode(),
        seq("q", "js").at(T0 + 2, assigned(job, run)).encode(),
        seq("q", "js").at(T0 + 3, running(job, run, Some("n1"))).encode(),
    ]
}

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

#[tokio::test]
async fn d05_undecodable_messages_are_quarantined_not_dropped() {
    let db = support::db::TestDb::migrated().await;
    let garbage = vec![0xff, 0xfe, 0x01, 0x99, 0x42];
    let empty_queue = seq("", "js").at(T0, submit("x")).encode();
    let msgs = vec![garbage.clone(), seq("q", "js").at(T0, submit("good")).encode(), empty_queue.clone()];
    let s = ingest(&db.url, &msgs, 10_000).await;
    assert_eq!(s.quarantined, 2);
    let q: Vec<(String, Vec<u8>, i64, Option<i32>)> = sqlx::query_as(
        "SELECT reason, payload, entry_id, event_index FROM lookout_ingester.quarantine ORDER BY entry_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(q[0], ("undecodable".to_string(), garbage, 0, None));
    assert_eq!(q[1], ("empty_queue".to_string(), empty_queue, 2, None));
    assert_eq!(rows::job(&db.pool, "good").await.state, 1);
}

#[tokio::test]
async fn d06_one_bad_row_is_quarantined_with_its_sqlstate_and_the_rest_commits() {
    let db = support::db::TestDb::migrated().await;
    // An operator's constraint that one event violates: Postgres rejects that row (23514), and only that row.
    sqlx::query("ALTER TABLE job ADD CONSTRAINT no_poison CHECK (queue <> 'poison')").execute(&db.pool).await.unwrap();
    let mut good = run_to_running("g1", "r1");
    good.push(seq("poison", "js").at(T0, submit("bad")).at(T0 + 1, leased("bad", "rb", "c", "n", "p")).encode());
    good.extend(run_to_running("g2", "r2"));
    let started = std::time::Instant::now();
    let s = ingest(&db.url, &good, 10_000).await;
    assert!(started.elapsed() < Duration::from_secs(30), "isolation must not retry forever");
    assert_eq!(s.quarantined, 1);
    let (reason, sqlstate, job_id, kind): (String, Option<String>, Option<String>, Option<String>) =
        sqlx::query_as("SELECT reason, sqlstate, job_id, event_kind FROM lookout_ingester.quarantine")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (reason.as_str(), sqlstate.as_deref(), job_id.as_deref(), kind.as_deref()),
        ("db_rejected", Some("23514"), Some("bad"), Some("submitJob"))
    );
    assert_eq!(rows::job(&db.pool, "g1").await.state, 3);
    assert_eq!(rows::job(&db.pool, "g2").await.state, 3);
    // The lease of the rejected job waits for its job, visibly.
    assert_eq!(
        rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.parked_event WHERE job_id = 'bad'").await,
        1
    );
}

#[tokio::test]
async fn d07_truncation_cuts_at_character_boundaries() {
    let db = support::db::TestDb::migrated().await;
    let queue = "ü".repeat(600);
    let s = seq(&queue, "js").at(T0, submit("j")).encode();
    ingest(&db.url, &[s], 10).await;
    let j = rows::job(&db.pool, "j").await;
    assert_eq!(j.queue.chars().count(), 512);
    assert!(j.queue.chars().all(|c| c == 'ü'));
}

#[tokio::test]
async fn d08_nul_is_removed_from_every_text_and_jsonb_value() {
    let db = support::db::TestDb::migrated().await;
    let mut sub = submit_job("j", 1, Some(pod(&[("cpu", "1")], Some("pc\0"))), &[("k\0", "v\0")]);
    if let EventKind::SubmitJob(s) = &mut sub {
        s.object_meta.as_mut().unwrap().namespace = b("n\0s");
    }
    let msgs = vec![
        seq("q\0", "js").at(T0, sub).encode(),
        seq("q", "js").at(T0 + 1, leased("j", "r", "c\0", "n\0", "p\0")).encode(),
        seq("q", "js")
            .at(
                T0 + 2,
                run_errors("j", "r", vec![error(true, pod_error("m\0sg", "n\u{0}2", &[1], "d\0"), "c\0at", "s\0ub")]),
            )
            .encode(),
        seq("q", "js").at(T0 + 3, run_cancelled("j", "r", "why\0", "who\0")).encode(),
        seq("q", "js").at(T0 + 4, cancelled_job("j", "re\0ason", "us\0er")).encode(),
    ];
    let s = ingest(&db.url, &msgs, 10_000).await;
    assert_eq!(s.quarantined, 0);
    assert!(s.sanitized >= 12, "every change is recorded ({} recorded)", s.sanitized);
    let j = rows::job(&db.pool, "j").await;
    assert_eq!((j.queue.as_str(), j.namespace.as_deref(), j.priority_class.as_deref()), ("q", Some("ns"), Some("pc")));
    assert_eq!(j.annotations, serde_json::json!({"k": "v"}));
    assert_eq!((j.cancel_reason.as_deref(), j.cancel_user.as_deref()), (Some("reason"), Some("user")));
    let r = rows::run(&db.pool, "r").await;
    assert_eq!((r.cluster.as_str(), r.node.as_deref(), r.pool.as_deref()), ("c", Some("n2"), Some("p")));
    // Blob columns are bytea: the producer's bytes are kept as sent, NUL included.
    assert_eq!((r.error.as_deref(), r.debug.as_deref()), (Some("m\0sg"), Some("d\0")));
    assert_eq!((r.failure_category.as_deref(), r.failure_subcategory.as_deref()), (Some("cat"), Some("sub")));
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
async fn d10_malformed_submit_degrades_per_job_instead_of_crashing() {
    let db = support::db::TestDb::migrated().await;
    let mut no_meta = submit_job("no-meta", 1, None, &[]);
    if let EventKind::SubmitJob(s) = &mut no_meta {
        s.object_meta = None;
        s.objects = vec![
            KubernetesObject { object_meta: None, object: Some(kubernetes_object::Object::ConfigMap(b("cm"))) },
            KubernetesObject { object_meta: None, object: None },
        ];
    }
    let msgs = vec![
        seq("q", "js").at(T0, no_meta).at(T0, submit_job("fine", 1, Some(pod(&[("cpu", "2")], None)), &[])).encode(),
    ];
    let s = ingest(&db.url, &msgs, 10).await;
    assert_eq!(s.quarantined, 0);
    let j = rows::job(&db.pool, "no-meta").await;
    assert_eq!((j.cpu, j.memory, j.state, j.annotations.clone()), (0, 0, 1, serde_json::json!({})));
    let spec = rows::job_spec(&db.pool, "no-meta").await.expect("a spec is still written");
    let decoded: lookout_ingester::proto::api::Job = prost::Message::decode(spec.as_slice()).expect("valid api.Job");
    assert_eq!(&decoded.id[..], b"no-meta");
    assert!(decoded.pod_spec.is_none());
    assert_eq!(rows::job(&db.pool, "fine").await.cpu, 2000);
    let fixes =
        rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.sanitized_value WHERE job_id = 'no-meta'").await;
    assert!(fixes >= 3, "no pod spec, the config map and the empty object are recorded ({fixes})");
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
async fn d13_an_invalid_quantity_costs_one_value_not_the_message() {
    let db = support::db::TestDb::migrated().await;
    let msg = seq("q", "js")
        .at(T0, submit_job("bad", 1, Some(pod(&[("cpu", "lots"), ("memory", "1Gi")], None)), &[]))
        .at(T0, submit_job("other", 1, Some(pod(&[("cpu", "250m")], None)), &[]))
        .encode();
    let s = ingest(&db.url, &[msg], 10).await;
    assert_eq!(s.quarantined, 0);
    let bad = rows::job(&db.pool, "bad").await;
    assert_eq!((bad.cpu, bad.memory), (0, 1 << 30));
    assert_eq!(rows::job(&db.pool, "other").await.cpu, 250);
    let (field, fix, original): (String, String, Vec<u8>) =
        sqlx::query_as("SELECT field, fix, original FROM lookout_ingester.sanitized_value WHERE job_id = 'bad'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((field.as_str(), fix.as_str(), original.as_slice()), ("job.cpu", "bad_quantity", &b"lots"[..]));
}

#[tokio::test]
async fn d14_node_is_never_unknown_or_empty() {
    let db = support::db::TestDb::migrated().await;
    let msgs = vec![
        seq("q", "js")
            .at(T0, submit("a"))
            .at(T0 + 1, leased("a", "ra", "c", "real-node", "p"))
            .at(T0 + 2, running("a", "ra", None))
            .encode(),
        seq("q", "js").at(T0, submit("b")).at(T0 + 1, leased("b", "rb", "c", "", "")).encode(),
    ];
    ingest(&db.url, &msgs, 10).await;
    assert_eq!(rows::run(&db.pool, "ra").await.node.as_deref(), Some("real-node"));
    let b = rows::run(&db.pool, "rb").await;
    assert_eq!((b.node, b.pool), (None, None));
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
async fn d17_an_over_long_category_never_fails_the_batch() {
    let db = support::db::TestDb::migrated().await;
    let long = "x".repeat(200);
    let mut msgs = run_to_running("j", "r");
    msgs.push(
        seq("q", "js")
            .at(T0 + 4, run_errors("j", "r", vec![error(true, pod_error("m", "", &[1], ""), &long, "ok")]))
            .encode(),
    );
    msgs.extend(run_to_running("k", "rk"));
    let s = ingest(&db.url, &msgs, 10_000).await;
    assert_eq!((s.quarantined, s.batches), (0, 1));
    assert_eq!(rows::run(&db.pool, "r").await.failure_category.map(|c| c.len()), Some(63));
    assert_eq!(rows::job(&db.pool, "k").await.state, 3);
}

#[tokio::test]
async fn d18_a_batch_commits_whole_or_not_at_all() {
    let db = support::db::TestDb::migrated().await;
    // The last write of the batch (job_error) fails with a retryable error every time: nothing of the batch may be
    // visible afterwards, although the job rows were written earlier in the same transaction.
    sqlx::raw_sql(
        "CREATE FUNCTION fail_always() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'down' USING ERRCODE = '57P03'; END $$;
         CREATE TRIGGER fail_job_error BEFORE INSERT ON job_error FOR EACH ROW EXECUTE FUNCTION fail_always();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let msgs = vec![
        seq("q", "js")
            .at(T0, submit("a"))
            .at(T0, submit("b"))
            .at(T0 + 1, job_errors("b", vec![error(true, rejected("no"), "", "")]))
            .encode(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.bin");
    std::fs::write(&path, delimited(&msgs)).unwrap();
    let store = lookout_ingester::writer::Writer::connect(
        std::str::FromStr::from_str(&db.url).unwrap(),
        Converter::default(),
        None,
        Duration::from_millis(50),
    )
    .await
    .unwrap()
    .with_max_attempts(2);
    let result = lookout_ingester::apply::apply_files(&store, &[path], 10).await;
    assert!(result.is_err(), "the batch cannot commit");
    assert_eq!(rows::count(&db.pool, "SELECT count(*) FROM job").await, 0, "no partial batch is visible");
    assert_eq!(
        rows::count(&db.pool, "SELECT count(*) FROM lookout_ingester.quarantine").await,
        0,
        "a transient error quarantines nothing"
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

#[tokio::test]
async fn d06_a_lost_connection_is_retried_without_quarantining_anything() {
    let db = support::db::TestDb::migrated().await;
    // The first time a job is inserted, the writer's own backend is terminated (the connection drops mid-batch).
    sqlx::raw_sql(
        "CREATE SEQUENCE kill_once;
         CREATE FUNCTION drop_connection_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF nextval('kill_once') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$;
         CREATE TRIGGER drop_connection BEFORE INSERT ON job FOR EACH ROW EXECUTE FUNCTION drop_connection_once();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let s = ingest(&db.url, &run_to_running("j", "r"), 10_000).await;
    assert_eq!((s.quarantined, s.batches), (0, 1));
    assert_eq!(rows::count(&db.pool, "SELECT last_value FROM kill_once").await, 2, "the batch was tried twice");
    assert_eq!(rows::job(&db.pool, "j").await.state, 3);
    assert_eq!(rows::run(&db.pool, "r").await.state, 2);
}
