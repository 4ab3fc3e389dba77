//! Defects of the reference ingester (docs/compatibility.md §6) about what goes wrong, one test per defect, named
//! after it: undecodable or malformed input, values that do not fit a column, a row Postgres rejects, a connection
//! that drops, a write that keeps failing. Each costs one value or one row — quarantined or sanitized, visibly —
//! never the rest of the batch, and never half a batch. Each test feeds the input that makes the reference go wrong
//! and asserts what must happen instead; against the real Postgres, through `apply`. (Valid streams in any order:
//! `defects_rows.rs`.)

mod support;

use std::time::Duration;

use lookout_ingester::convert::Converter;
use lookout_ingester::proto::armadaevents::{EventKind, KubernetesObject, kubernetes_object};
use support::defects::{T0, run_to_running, submit};
use support::events::*;
use support::ingest::ingest;
use support::rows;

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
