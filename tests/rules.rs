//! The event → row mapping of docs/compatibility.md §5, arm by arm: every `Error` reason of `JobRunErrors` (§5.3) and `JobErrors`
//! (§5.4), the failure-category rules (§5.5), ingress addresses, debug info, reprioritisation, annotations, the
//! external URI, and the arms that change nothing. Against the real Postgres, through `apply`.

mod support;

use lookout_ingester::proto::armadaevents::{self as ev, EventKind, error::Reason};
use support::events::*;
use support::ingest::ingest;
use support::rows::{self, ts};

/// Submit, lease, assigned, running (node `n1`).
fn started(job: &str, run: &str) -> Seq {
    seq("q", "js")
        .at(T0, submit_job(job, 1, Some(pod(&[("cpu", "1")], None)), &[]))
        .at(T0 + 1, leased(job, run, "c", "n1", "p"))
        .at(T0 + 2, assigned(job, run))
        .at(T0 + 3, running(job, run, Some("n1")))
}

fn all_reasons() -> Vec<(&'static str, Reason)> {
    vec![
        ("podError", pod_error("pod failed", "n2", &[0, 3, 5], "pod debug")),
        ("podLeaseReturned", lease_returned("lease returned", "lease debug")),
        ("leaseExpired", Reason::LeaseExpired(ev::LeaseExpired {})),
        ("reconciliationError", Reason::ReconciliationError(ev::ReconciliationError { message: b("reconcile") })),
        ("kubernetesError", Reason::KubernetesError(ev::KubernetesError { resource_type: b("pod") })),
        ("containerError", Reason::ContainerError(ev::ContainerError { exit_code: 9, ..Default::default() })),
        ("executorError", Reason::ExecutorError(ev::ExecutorError {})),
        ("maxRunsExceeded", max_runs("too many runs")),
        ("gangJobUnschedulable", Reason::GangJobUnschedulable(ev::GangJobUnschedulable { message: b("gang") })),
        ("jobRejected", rejected("rejected")),
    ]
}

#[tokio::test]
async fn job_run_errors_every_reason() {
    // (state, error text, exit code, node, debug) per docs/compatibility.md §5.3.
    type Row = (i16, &'static str, Option<i32>, &'static str, Option<&'static str>);
    let expected: Vec<Row> = vec![
        (4, "pod failed", Some(3), "n2", Some("pod debug")),
        (8, "lease returned", None, "n1", Some("lease debug")),
        (9, "Lease expired", None, "n1", None),
        (4, "reconcile", None, "n1", None),
        (4, "Unknown error", None, "n1", None),
        (4, "Unknown error", None, "n1", None),
        (4, "Unknown error", None, "n1", None),
        (4, "Unknown error", None, "n1", None),
        (4, "Unknown error", None, "n1", None),
        (4, "Unknown error", None, "n1", None),
    ];
    let db = support::db::TestDb::migrated().await;
    let mut msgs = Vec::new();
    for (i, (_, reason)) in all_reasons().into_iter().enumerate() {
        let (job, run) = (format!("j{i}"), format!("r{i}"));
        msgs.push(
            started(&job, &run).at(T0 + 4, run_errors(&job, &run, vec![error(true, reason, "cat", "sub")])).encode(),
        );
    }
    let no_reason = ev::Error { terminal: true, reason: None, ..Default::default() };
    msgs.push(started("jx", "rx").at(T0 + 4, run_errors("jx", "rx", vec![no_reason])).encode());
    ingest(&db.url, &msgs, 10_000).await;
    for (i, ((name, _), (state, text, exit, node, debug))) in all_reasons().into_iter().zip(expected).enumerate() {
        let r = rows::run(&db.pool, &format!("r{i}")).await;
        assert_eq!(r.state, state, "{name}");
        assert_eq!(r.error.as_deref(), Some(text), "{name}");
        assert_eq!(r.exit_code, exit, "{name}");
        assert_eq!(r.node.as_deref(), Some(node), "{name}");
        assert_eq!(r.debug.as_deref(), debug, "{name}");
        assert_eq!(r.finished, Some(ts(T0 + 4)), "{name}");
        assert_eq!(
            (r.failure_category.as_deref(), r.failure_subcategory.as_deref()),
            (Some("cat"), Some("sub")),
            "{name}"
        );
        // The job moves only with JobErrors.
        assert_eq!(rows::job(&db.pool, &format!("j{i}")).await.state, 3, "{name}");
    }
    let r = rows::run(&db.pool, "rx").await;
    assert_eq!((r.state, r.error.as_deref()), (4, Some("Unknown error")));
}

#[tokio::test]
async fn job_errors_every_reason() {
    let db = support::db::TestDb::migrated().await;
    let mut msgs = Vec::new();
    let mut reasons = all_reasons();
    reasons.push(("jobRunPreemptedError", preempted_error("preempted")));
    for (i, (_, reason)) in reasons.iter().cloned().enumerate() {
        let job = format!("j{i}");
        let mut e = error(true, reason, "cat", "sub");
        e.retry_policy_name = b("default-policy");
        msgs.push(started(&job, &format!("r{i}")).at(T0 + 5, job_errors(&job, vec![e])).encode());
    }
    ingest(&db.url, &msgs, 10_000).await;
    for (i, (name, _)) in reasons.iter().enumerate() {
        let job = format!("j{i}");
        let j = rows::job(&db.pool, &job).await;
        let state = match *name {
            "jobRunPreemptedError" => 7,
            "jobRejected" => 9,
            _ => 5,
        };
        assert_eq!(j.state, state, "{name}");
        assert_eq!(j.last_transition_time, ts(T0 + 5), "{name}");
        assert_eq!(j.failure_reason.as_deref(), Some(*name), "{name}");
        assert_eq!(
            (j.failure_category.as_deref(), j.failure_subcategory.as_deref()),
            (Some("cat"), Some("sub")),
            "{name}"
        );
        let job_error = rows::job_error(&db.pool, &job).await;
        assert_eq!(job_error.as_deref(), if *name == "jobRejected" { Some("rejected") } else { None }, "{name}");
    }
    let retry: Option<String> = sqlx::query_scalar("SELECT ingester_retry_policy FROM job WHERE job_id = 'j0'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(retry.as_deref(), Some("default-policy"));
}

#[tokio::test]
async fn job_errors_uses_first_terminal_and_ignores_non_terminal() {
    let db = support::db::TestDb::migrated().await;
    let msgs = vec![
        started("a", "ra").at(T0 + 5, job_errors("a", vec![error(false, max_runs("retry"), "x", "")])).encode(),
        started("b", "rb")
            .at(
                T0 + 5,
                job_errors(
                    "b",
                    vec![error(false, pod_error("m", "", &[], ""), "", ""), error(true, preempted_error("p"), "", "")],
                ),
            )
            .encode(),
    ];
    ingest(&db.url, &msgs, 10_000).await;
    assert_eq!(
        rows::job(&db.pool, "a").await.state,
        3,
        "a non-terminal JobErrors announces a retry and changes nothing"
    );
    assert_eq!(rows::job(&db.pool, "b").await.state, 7);
}

#[tokio::test]
async fn categories_first_non_preemption_error_terminal_only_non_empty_and_at_most_63() {
    let db = support::db::TestDb::migrated().await;
    let long = "é".repeat(70);
    let msgs = vec![
        // The preemption error is skipped; the next one is chosen, whatever comes after it.
        started("a", "ra")
            .at(
                T0 + 4,
                run_errors(
                    "a",
                    "ra",
                    vec![
                        error(true, preempted_error("p"), "ignored", "ignored"),
                        error(true, pod_error("m", "", &[1], ""), "oom", "limit"),
                        error(true, pod_error("m2", "", &[2], ""), "other", "other"),
                    ],
                ),
            )
            .encode(),
        // Subcategory without category is stored as is.
        started("b", "rb")
            .at(T0 + 4, run_errors("b", "rb", vec![error(true, pod_error("m", "", &[], ""), "", "only-sub")]))
            .encode(),
        // Over-long values are cut at 63 characters (not bytes) and recorded; the batch does not fail.
        started("c", "rc")
            .at(T0 + 4, run_errors("c", "rc", vec![error(true, pod_error("m", "", &[], ""), &long, &long)]))
            .encode(),
        // Non-terminal: no category, no state change, no finished.
        started("d", "rd")
            .at(T0 + 4, run_errors("d", "rd", vec![error(false, pod_error("m", "", &[], ""), "cat", "sub")]))
            .encode(),
    ];
    let summary = ingest(&db.url, &msgs, 10_000).await;
    assert_eq!(summary.quarantined, 0);
    let a = rows::run(&db.pool, "ra").await;
    assert_eq!(
        (a.failure_category.as_deref(), a.failure_subcategory.as_deref(), a.exit_code),
        (Some("oom"), Some("limit"), Some(1))
    );
    let b = rows::run(&db.pool, "rb").await;
    assert_eq!((b.failure_category.as_deref(), b.failure_subcategory.as_deref()), (None, Some("only-sub")));
    let c = rows::run(&db.pool, "rc").await;
    assert_eq!(c.failure_category.as_deref().map(|s| s.chars().count()), Some(63));
    assert_eq!(c.failure_category.as_deref(), Some("é".repeat(63).as_str()));
    let fixes: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT field, fix, original FROM lookout_ingester.sanitized_value WHERE run_id = 'rc' ORDER BY field",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(fixes.len(), 2);
    assert_eq!((fixes[0].0.as_str(), fixes[0].1.as_str()), ("job_run.failure_category", "truncated"));
    assert_eq!(fixes[0].2, long.as_bytes(), "the original value is kept");
    let d = rows::run(&db.pool, "rd").await;
    assert_eq!((d.state, d.finished, d.failure_category), (2, None, None));
    // A later error with empty categories never clears them.
    ingest(
        &db.url,
        &[seq("q", "js")
            .at(T0 + 9, run_errors("a", "ra", vec![error(true, pod_error("m", "", &[], ""), "", "")]))
            .encode()],
        10,
    )
    .await;
    assert_eq!(rows::run(&db.pool, "ra").await.failure_category.as_deref(), Some("oom"));
}

#[tokio::test]
async fn ingress_debug_reprioritise_annotations_and_external_uri() {
    let db = support::db::TestDb::migrated().await;
    let mut submit = submit_job(
        "j",
        3,
        Some(pod(&[("cpu", "1")], None)),
        &[("armadaproject.io/externalJobUri", "http://x/1"), ("armadaproject.io/a", "1"), ("b", "2")],
    );
    if let EventKind::SubmitJob(s) = &mut submit {
        s.object_meta.as_mut().unwrap().namespace = b("team-ns");
    }
    let msgs = vec![
        seq("q", "js")
            .at(T0, submit)
            .at(T0 + 1, reprioritised("j", 4))
            .at(T0 + 1, reprioritised("j", 9))
            .at(T0 + 2, leased("j", "r", "c", "", "p"))
            .at(T0 + 3, ingress("j", "r", &[(8080, "10.0.0.7")]))
            .at(T0 + 4, ingress("j", "r", &[(9090, "10.0.0.8")]))
            .at(T0 + 5, ingress("j", "r", &[]))
            .at(T0 + 6, run_succeeded("j", "r"))
            .at(T0 + 7, debug_info("j", "r", "{\"schemaVersion\":1}"))
            .at(T0 + 8, debug_info("j", "r", ""))
            .encode(),
    ];
    ingest(&db.url, &msgs, 10_000).await;
    let j = rows::job(&db.pool, "j").await;
    assert_eq!(j.priority, 9);
    assert_eq!(j.last_transition_time, ts(T0 + 2), "reprioritisation is not a transition");
    assert_eq!(j.annotations, serde_json::json!({"a": "1", "b": "2", "externalJobUri": "http://x/1"}));
    assert_eq!(j.external_job_uri.as_deref(), Some("http://x/1"));
    assert_eq!(j.namespace.as_deref(), Some("team-ns"));
    let r = rows::run(&db.pool, "r").await;
    assert_eq!(r.ingress_addresses, Some(serde_json::json!({"8080": "10.0.0.7", "9090": "10.0.0.8"})));
    assert_eq!(r.debug.as_deref(), Some("{\"schemaVersion\":1}"));
    assert_eq!(r.node, None, "a lease without a node writes NULL, not ''");
    // An older reprioritisation replayed later does not win.
    ingest(&db.url, &[seq("q", "js").at(T0, reprioritised("j", 2)).encode()], 10).await;
    assert_eq!(rows::job(&db.pool, "j").await.priority, 9);
}

#[tokio::test]
async fn arms_that_change_nothing_are_accepted_silently() {
    let db = support::db::TestDb::migrated().await;
    let quiet = vec![
        EventKind::ReprioritiseJob(ev::ReprioritiseJob { priority: 1, job_id: b("j") }),
        EventKind::ReprioritiseJobSet(ev::ReprioritiseJobSet { priority: 1 }),
        EventKind::CancelJob(ev::CancelJob { reason: b("r"), job_id: b("j") }),
        EventKind::CancelJobSet(ev::CancelJobSet { states: vec![0], reason: b("r") }),
        EventKind::ResourceUtilisation(Box::new(ev::ResourceUtilisation {
            job_id: b("j"),
            run_id: b("r"),
            ..Default::default()
        })),
        EventKind::PartitionMarker(ev::PartitionMarker { group_id: b("g"), partition: 1 }),
        EventKind::JobRunPreemptionRequested(ev::JobRunPreemptionRequested { job_id: b("j"), run_id: b("r") }),
        EventKind::JobPreemptionRequested(ev::JobPreemptionRequested { job_id: b("j"), reason: b("r") }),
        EventKind::JobValidated(ev::JobValidated { pools: vec![b("p")], job_id: b("j") }),
    ];
    let mut s = started("j", "r");
    for (i, k) in quiet.into_iter().enumerate() {
        s = s.at(T0 + 10 + i as i64, k);
    }
    s.seq.events.push(ev::Event { created: at(T0 + 30), event: None });
    let before_db = support::db::TestDb::migrated().await;
    ingest(&before_db.url, &[started("j", "r").encode()], 10_000).await;
    let summary = ingest(&db.url, &[s.encode()], 10_000).await;
    assert_eq!((summary.quarantined, summary.parked), (0, 0));
    assert_eq!(rows::jobs(&db.pool).await, rows::jobs(&before_db.pool).await);
    assert_eq!(rows::runs(&db.pool).await, rows::runs(&before_db.pool).await);
}

#[tokio::test]
async fn missing_created_uses_publish_time() {
    let db = support::db::TestDb::migrated().await;
    let mut s = seq("q", "js").at(T0, submit_job("j", 1, None, &[]));
    s.seq.events[0].created = None;
    let summary = ingest(&db.url, &[s.encode()], 10).await;
    assert_eq!(summary.quarantined, 0);
    let j = rows::job(&db.pool, "j").await;
    // apply uses the file's modification time as the publish time: "now", give or take.
    let submitted = chrono::NaiveDateTime::parse_from_str(&j.submitted, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let age = chrono::Utc::now().naive_utc() - submitted;
    assert!(age.num_seconds().abs() < 120, "submitted {submitted} should be the publish time");
}
