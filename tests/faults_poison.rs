//! Faults in the data: a poison corpus among good messages never stalls the pipeline and is kept where it can be
//! seen.
//!
//! Needs `DATABASE_URL`, `PULSAR_URL`, `PULSAR_ADMIN_URL` (`scripts/services.sh up`; see tests/service.rs). Tests that
//! stop, kill or restart services use a private Postgres + Pulsar pair started with `scripts/services.sh` (state in
//! /var/tmp/li-test-faults, ports 55461/6661/8061/3161), one test at a time; the shared pair is never restarted.
//! `LI_TEST_LOG=debug` shows the in-process service's logs; a child process's log is printed when its test fails.
//! Every test ends by comparing every table the ingester writes with what the `apply` path gives for the same
//! messages (`support::snapshot::reference`).

mod support;

use std::time::{Duration, Instant};

use lookout_ingester::config::Config;
use support::app::init_logs;
use support::broker::*;
use support::child::*;
use support::db::TestDb;
use support::events::*;
use support::faults::*;
use support::http::*;
use support::snapshot::*;
use support::stream::*;

// ------------------------------------------------------------------------------------------------ 3. poison

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    put_varint((u64::from(field) << 3) | 2, out);
    put_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// An `EventSequence` whose only event has oneof arm `arm` (unknown to Armada's schema), built by hand.
fn unknown_arm_message(queue: &str, jobset: &str, arm: u32) -> Vec<u8> {
    let mut created = Vec::new();
    put_varint(1 << 3, &mut created); // seconds, varint
    put_varint(T0 as u64, &mut created);
    let mut event = Vec::new();
    put_len(18, &created, &mut event);
    put_len(arm, b"\x0a\x03abc", &mut event);
    let mut out = Vec::new();
    put_len(1, queue.as_bytes(), &mut out);
    put_len(2, jobset.as_bytes(), &mut out);
    put_len(3, b"alice", &mut out);
    put_len(5, &event, &mut out);
    out
}

/// One message of `2 * jobs` events: a submit and a lease for each of `jobs` jobs.
fn huge_message(tag: &str, jobs: usize) -> Vec<u8> {
    let mut s = seq("bulk", "bulk-set");
    for i in 0..jobs {
        let job = format!("{tag}h{i:07}");
        s = s.at(T0 + (i % 1000) as i64, submit_job(&job, (i % 3) as u32, None, &[]));
        s = s.at(
            T0 + 1000 + (i % 1000) as i64,
            leased(&job, &format!("{tag}-hr-{i:07}"), "cluster-b", "node-9", "bulk"),
        );
    }
    s.encode()
}

/// Poison among good messages. Good rows land; unusable messages are quarantined whole (the published bytes, with
/// the reason), unusable events alone (re-encoded), values that do not fit are fixed and their originals kept, and
/// events whose job or run never comes are parked. The pipeline never stalls: `/readyz` stays 200 throughout, the
/// backlog reaches 0, and `lookout_ingester_quarantined_total{reason}` counts exactly the quarantined rows. The corpus
/// includes one message of 100 000 events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_never_stalls_and_is_kept_where_it_can_be_seen() {
    use lookout_ingester::proto::armadaevents::{self as ev, EventKind, EventSequence};
    use prost::Message as _;
    init_logs();
    let started = Instant::now();
    let b = shared_broker();
    let id = short_id();
    let tag = &id[..6];
    let (name, sub) = (format!("li-poison-{id}"), format!("li-poison-{id}"));
    const PARTITIONS: u32 = 3;
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    let db = TestDb::migrated().await;

    let good = stream(tag, 240, T0);
    let long = "x".repeat(10_000);
    let job = |n: &str| format!("{tag}p{n}");
    let cancel_set =
        EventKind::CancelJobSet(ev::CancelJobSet { states: vec![42, 1], reason: support::events::b("spring clean") });
    let mut oom_99 = error(true, pod_error("odd reason", "node-1", &[1], ""), &long, "sub");
    if let Some(ev::error::Reason::PodError(p)) = &mut oom_99.reason {
        p.kubernetes_reason = 99;
        p.container_errors[0].kubernetes_reason = 99;
    }
    let invalid_id_event = event(T0 + 1, submit_job(&"J".repeat(40), 1, None, &[]));
    let invalid_id_seq = EventSequence {
        queue: support::events::b("research"),
        job_set_name: support::events::b("poison"),
        user_id: support::events::b("alice"),
        groups: vec![],
        events: vec![invalid_id_event.clone(), event(T0 + 2, submit_job(&job("ok-beside-bad-id"), 1, None, &[]))],
    };
    let poison: Vec<(&str, Keyed)> = vec![
        ("garbage", ("poison".into(), vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x12])),
        (
            "empty queue",
            ("poison".into(), seq("", "poison").at(T0, submit_job(&job("empty-q"), 1, None, &[])).encode()),
        ),
        ("no events", ("poison".into(), seq("research", "poison").encode())),
        ("invalid id", ("poison".into(), invalid_id_seq.encode_to_vec())),
        (
            "invalid UTF-8",
            ("poison".into(), {
                let mut s = seq("research", "set-\u{1}").at(T0, submit_job(&job("utf8"), 1, None, &[("note", "ok")]));
                s.seq.job_set_name = lookout_ingester::proto::Bytes::from_static(b"set-\xff\xfe");
                if let Some(EventKind::SubmitJob(sj)) = &mut s.seq.events[0].event {
                    sj.object_meta.as_mut().unwrap().namespace =
                        lookout_ingester::proto::Bytes::from_static(b"ns-\xc3");
                }
                s.encode()
            }),
        ),
        (
            "NUL bytes",
            ("poison".into(), {
                seq("research", "poison")
                    .user("al\0ice")
                    .at(T0, submit_job(&job("nul"), 1, None, &[]))
                    .at(T0 + 5, cancelled_job(&job("nul"), "why\0not", "bo\0b"))
                    .encode()
            }),
        ),
        (
            "10 000-char queue",
            ("poison".into(), seq(&long, "poison").at(T0, submit_job(&job("long-q"), 1, None, &[])).encode()),
        ),
        (
            "10 000-char category, KubernetesReason 99",
            ("poison".into(), {
                seq("research", "poison")
                    .at(T0, submit_job(&job("k99"), 1, None, &[]))
                    .at(T0 + 1, leased(&job("k99"), &job("k99-run"), "cluster-a", "node-1", "default"))
                    .at(T0 + 2, run_errors(&job("k99"), &job("k99-run"), vec![oom_99.clone()]))
                    .at(T0 + 3, job_errors(&job("k99"), vec![oom_99.clone()]))
                    .encode()
            }),
        ),
        ("JobState 42", ("poison".into(), seq("research", "poison").at(T0, cancel_set).encode())),
        ("unknown oneof arm", ("poison".into(), unknown_arm_message("research", "poison", 99))),
        ("unknown job", ("poison".into(), seq("research", "poison").at(T0, job_succeeded(&job("never"))).encode())),
        (
            "unknown run",
            ("poison".into(), {
                seq("research", "poison")
                    .at(T0, submit_job(&job("has-no-run"), 1, None, &[]))
                    .at(T0 + 1, running(&job("has-no-run"), &job("missing-run"), Some("node-1")))
                    .encode()
            }),
        ),
        ("100 000 events", ("bulk-set".into(), huge_message(tag, 50_000))),
    ];
    eprintln!("[faults] huge message: {} bytes", poison.last().unwrap().1.1.len());
    // Good messages, then the poison one by one among more good ones.
    let mut messages: Vec<Keyed> = good[..400].to_vec();
    let rest = &good[400..];
    let per = rest.len() / poison.len();
    for (k, (_, m)) in poison.iter().enumerate() {
        messages.push(m.clone());
        messages.extend_from_slice(&rest[k * per..((k + 1) * per).min(rest.len())]);
    }
    messages.extend_from_slice(&rest[poison.len() * per..]);
    let want = tokio::spawn({
        let payloads = payloads(&messages);
        async move { reference(&payloads, &Config::default(), 1000).await }
    });

    let spec = child_spec("ingester", &db.url, &b, &topic, &sub, "batch_size: 500\nbatch_duration: 100ms\n");
    let child = Child::spawn(&spec).await;
    child.wait_ready(Duration::from_secs(60)).await;
    // /readyz, every 250 ms until the end.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let (addr, stop) = (child.http, stop.clone());
        async move {
            let (mut probes, mut not_ready) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (status, body) = http("GET", &format!("http://{addr}/readyz"), None).await;
                probes += 1;
                if status != 200 {
                    not_ready.push(format!("{status} {}", body.trim()));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (probes, not_ready)
        }
    });
    let mut producer = b.producer(&topic, true).await;
    publish(&mut producer, &messages).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, CATCH_UP).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (probes, not_ready) = probe.await.unwrap();
    eprintln!("[faults] /readyz probed {probes} times while the corpus was consumed");
    let (status, _) = child.get("/readyz").await;
    assert_eq!(status, 200, "/readyz after the corpus");

    let want = want.await.unwrap();
    let got = Snapshot::read(&db.pool).await;
    eprintln!("[faults] {}", got.summary());
    assert_same(&got, &want);
    assert!(not_ready.is_empty(), "/readyz was not 200: {not_ready:?}");

    // Every good job, and the good job beside the bad id, landed.
    let ids: std::collections::BTreeSet<&str> = got.jobs.iter().map(|j| j.job_id.as_str()).collect();
    for (_, (_, m)) in stream(tag, 240, T0).iter().enumerate().filter(|(k, _)| k % 50 == 0) {
        let seq = EventSequence::decode(m.as_slice()).unwrap();
        if let Some(EventKind::SubmitJob(s)) = &seq.events[0].event {
            assert!(ids.contains(String::from_utf8_lossy(&s.job_id).as_ref()));
        }
    }
    for j in ["ok-beside-bad-id", "utf8", "nul", "long-q", "k99", "has-no-run"] {
        assert!(ids.contains(job(j).as_str()), "job {j} missing");
    }
    assert_eq!(got.jobs.len(), 240 + 6 + 50_000, "{}", got.summary());
    assert_eq!(got.runs.iter().filter(|r| r.run_id.contains("-hr-")).count(), 50_000);

    // Quarantine: whole messages keep the published bytes; the bad event alone is re-encoded.
    let payload_of = |what: &str| poison.iter().find(|(w, _)| *w == what).unwrap().1.1.clone();
    let mut expected = vec![
        ("empty_queue".to_string(), None, None, payload_of("empty queue")),
        ("no_events".to_string(), None, None, payload_of("no events")),
        ("undecodable".to_string(), None, None, payload_of("garbage")),
        (
            "invalid_id".to_string(),
            Some("submitJob".to_string()),
            Some("J".repeat(40)),
            EventSequence { events: vec![invalid_id_event], ..invalid_id_seq.clone() }.encode_to_vec(),
        ),
    ];
    expected.sort();
    assert_eq!(got.quarantine, expected);
    // Sanitized values, with their originals.
    let fixed = |field: &str, fix: &str| {
        got.sanitized.iter().filter(|s| s.0 == field && s.1 == fix).map(|s| s.4.clone()).collect::<Vec<_>>()
    };
    assert_eq!(fixed("job.queue", "truncated"), vec![long.as_bytes().to_vec()]);
    assert_eq!(fixed("job.jobset", "invalid_utf8"), vec![b"set-\xff\xfe".to_vec()]);
    assert_eq!(fixed("job.namespace", "invalid_utf8"), vec![b"ns-\xc3".to_vec()]);
    assert!(fixed("job.owner", "nul_removed").contains(&b"al\0ice".to_vec()));
    assert!(got.sanitized.iter().any(|s| s.1 == "truncated" && s.4 == long.as_bytes() && s.0 != "job.queue"));
    let row = got.jobs.iter().find(|j| j.job_id == job("long-q")).unwrap();
    assert_eq!(row.queue, "x".repeat(512));
    let row = got.jobs.iter().find(|j| j.job_id == job("nul")).unwrap();
    assert_eq!((row.owner.as_str(), row.cancel_reason.as_deref()), ("alice", Some("whynot")));
    // Parked: the events whose job or run never comes.
    let parked: Vec<(&str, &str, &str)> =
        got.parked.iter().map(|p| (p.0.as_str(), p.1.as_str(), p.2.as_str())).collect();
    assert_eq!(
        parked,
        vec![("job", "jobSucceeded", job("never").as_str()), ("run", "jobRunRunning", job("has-no-run").as_str())]
    );

    // Metrics count exactly what was quarantined, by reason.
    let text = child.metrics().await;
    assert_eq!(metric(&text, "lookout_ingester_events_ignored_total", "kind=\"cancelJobSet\""), 1.0, "JobState 42");
    assert_eq!(metric(&text, "lookout_ingester_events_ignored_total", "kind=\"unknown\""), 1.0, "unknown arm");
    for reason in ["undecodable", "empty_queue", "no_events", "invalid_id"] {
        let n = metric(&text, "lookout_ingester_quarantined_total", &format!("reason=\"{reason}\""));
        assert_eq!(n, 1.0, "quarantined_total{{reason={reason}}}");
    }
    assert_eq!(metric(&text, "lookout_ingester_quarantined_total", ""), 4.0);
    assert_eq!(metric(&text, "lookout_ingester_sanitized_values_total", ""), got.sanitized.len() as f64);
    eprintln!("[faults] poison corpus done in {:?}", started.elapsed());
}
