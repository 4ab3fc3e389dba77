//! The load generator: a seed fixes a stream byte for byte; every message decodes as the service decodes it; the
//! outcome mix a profile states is what a real database holds after the stream is applied; and publishing over a
//! real Pulsar keeps every job set on one partition, in order, with zlib batches.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_ingester::decode::decode;
use lookout_ingester::loadgen::publish::{Options, Publisher, partition_of};
use lookout_ingester::loadgen::topic::Topic;
use lookout_ingester::loadgen::{DEFAULT_START, ProbeKind, Profile, Size, Spec, Stream, generate, long};
use lookout_ingester::message::{MessageId, Position, RawMessage};
use lookout_ingester::proto::armadaevents::EventKind;
use lookout_ingester::source::admin::Admin;
use sqlx::Row;
use support::db::TestDb;

fn spec(profile: Profile, size: Size, seed: u64) -> Spec {
    Spec { profile, size, seed, start: DEFAULT_START }
}

const PROFILES: [Profile; 3] = [Profile::Short, Profile::Long, Profile::Storm];

#[test]
fn a_seed_fixes_the_stream() {
    for profile in PROFILES {
        let a = generate(&spec(profile, Size::Jobs(500), 7));
        let b = generate(&spec(profile, Size::Jobs(500), 7));
        let c = generate(&spec(profile, Size::Jobs(500), 8));
        assert_eq!(a.messages, b.messages, "{profile:?}: same seed, different stream");
        assert_eq!(a.outcomes, b.outcomes);
        assert_ne!(a.payloads(), c.payloads(), "{profile:?}: another seed gave the same stream");
        assert_eq!(a.jobs, 500);
        let sized = generate(&spec(profile, Size::Events(5_000), 7));
        assert!(sized.events >= 5_000 && sized.events < 5_000 + 40, "{profile:?}: {} events", sized.events);
    }
}

fn decoded(stream: &Stream) -> Vec<lookout_ingester::proto::armadaevents::EventSequence> {
    stream
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let raw = RawMessage {
                position: Position { source: "test".into(), id: MessageId::new(0, i as i64, 0) },
                entry_size: m.payload.len() as i32,
                publish_time: 0,
                payload: m.payload.clone().into(),
            };
            let d = decode(raw);
            let seq = d.body().into_owned().unwrap_or_else(|e| panic!("message {i} does not decode: {e:?}"));
            assert_eq!(seq.events.len(), m.events as usize, "message {i}");
            assert_eq!(String::from_utf8_lossy(&seq.job_set_name), m.key, "message {i}: key is not the job set");
            seq
        })
        .collect()
}

#[test]
fn every_message_decodes_and_keeps_each_jobs_order() {
    for profile in PROFILES {
        let stream = generate(&spec(profile, Size::Jobs(2_000), 3));
        let seqs = decoded(&stream);
        assert_eq!(seqs.iter().map(|s| s.events.len()).sum::<usize>(), stream.events);
        // Each job's events appear in publish order with non-decreasing creation times, and its submit first.
        let mut last: BTreeMap<String, (i64, i32)> = BTreeMap::new();
        for s in &seqs {
            for e in &s.events {
                let kind = e.event.as_ref().expect("every event has a kind");
                let job = job_of(kind);
                let ts = e.created.as_ref().expect("created");
                let t = (ts.seconds, ts.nanos);
                match last.get(&job) {
                    None => assert!(matches!(kind, EventKind::SubmitJob(_)), "{profile:?}: {job} starts with {kind:?}"),
                    Some(prev) => assert!(*prev <= t, "{profile:?}: {job} goes back in time"),
                }
                last.insert(job, t);
            }
        }
        assert_eq!(last.len(), stream.jobs);
        // Probes name a job the message submits or ends.
        for m in stream.messages.iter().filter(|m| m.probe.is_some()) {
            let p = m.probe.as_ref().unwrap();
            assert!(p.kind == ProbeKind::Created || p.kind == ProbeKind::Terminal);
            assert_eq!(p.job_id.len(), 26);
        }
    }
}

fn job_of(kind: &EventKind) -> String {
    use EventKind::*;
    let b = match kind {
        SubmitJob(e) => &e.job_id,
        JobRunLeased(e) => &e.job_id,
        JobRunAssigned(e) => &e.job_id,
        JobRunRunning(e) => &e.job_id,
        JobRunSucceeded(e) => &e.job_id,
        JobSucceeded(e) => &e.job_id,
        JobRunErrors(e) => &e.job_id,
        JobErrors(e) => &e.job_id,
        CancelledJob(e) => &e.job_id,
        JobRunCancelled(e) => &e.job_id,
        JobRunPreempted(e) => &e.preempted_job_id,
        JobRequeued(e) => &e.job_id,
        ReprioritisedJob(e) => &e.job_id,
        JobRunTerminatedDebugInfo(e) => &e.job_id,
        other => panic!("unexpected event {other:?}"),
    };
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_long_profile_is_long() {
    let stream = generate(&spec(Profile::Long, Size::Jobs(20_000), 1));
    let seqs = decoded(&stream);
    // Jobs in flight (submitted, not yet ended) over event time reach 5 000–20 000.
    let mut changes: Vec<(i64, i64)> = Vec::new();
    let mut first: BTreeMap<String, i64> = BTreeMap::new();
    for s in &seqs {
        for e in &s.events {
            let kind = e.event.as_ref().unwrap();
            let t = e.created.as_ref().unwrap().seconds;
            let job = job_of(kind);
            if let EventKind::SubmitJob(_) = kind {
                first.insert(job.clone(), t);
                changes.push((t, 1));
            }
            let ends = matches!(kind, EventKind::JobSucceeded(_) | EventKind::CancelledJob(_))
                || matches!(kind, EventKind::JobErrors(x) if x.errors.iter().any(|e| e.terminal));
            if ends {
                changes.push((t, -1));
            }
        }
    }
    changes.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, d) in changes {
        now += d;
        peak = peak.max(now);
    }
    assert!((5_000..=20_000).contains(&peak), "peak jobs in flight {peak}");
    // A job's events spread over many 10 000-event batches: the median job spans more than two batches.
    let mut position: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut n = 0usize;
    for s in &seqs {
        for e in &s.events {
            let job = job_of(e.event.as_ref().unwrap());
            position.entry(job).and_modify(|p| p.1 = n).or_insert((n, n));
            n += 1;
        }
    }
    let mut spans: Vec<usize> = position.values().map(|(a, b)| b / 10_000 - a / 10_000).collect();
    spans.sort();
    assert!(spans[spans.len() / 2] >= 2, "median job spans {} batch boundaries", spans[spans.len() / 2]);
    // Several queues and job sets; messages group several events.
    let queues: std::collections::BTreeSet<_> = seqs.iter().map(|s| s.queue.clone()).collect();
    let jobsets: std::collections::BTreeSet<_> = seqs.iter().map(|s| s.job_set_name.clone()).collect();
    assert!(queues.len() >= 5 && jobsets.len() >= 50, "{} queues, {} job sets", queues.len(), jobsets.len());
    assert!(stream.events as f64 / stream.messages.len() as f64 > 1.5);
}

#[test]
fn the_long_profiles_mix_is_its_stated_weights() {
    let stream = generate(&spec(Profile::Long, Size::Jobs(20_000), 5));
    for (outcome, per_mille) in long::outcome_weights() {
        let share = *stream.outcomes.get(outcome).unwrap_or(&0) as f64 / stream.jobs as f64;
        let want = *per_mille as f64 / 1000.0;
        assert!((share - want).abs() < 0.015, "{outcome}: {share:.3} of the jobs, stated {want:.3}");
    }
    assert!(stream.failure_categories.len() >= 8, "{:?}", stream.failure_categories);
}

async fn apply_and_count(stream: &Stream) -> (BTreeMap<i16, usize>, Vec<(String, String)>, i64) {
    let db = TestDb::migrated().await;
    let summary = support::ingest::ingest(&db.url, &stream.payloads(), 10_000).await;
    let _ = summary;
    let rows = sqlx::query("SELECT state, count(*) FROM job GROUP BY state").fetch_all(&db.pool).await.unwrap();
    let states = rows.iter().map(|r| (r.get::<i16, _>(0), r.get::<i64, _>(1) as usize)).collect();
    let cats = sqlx::query(
        "SELECT DISTINCT coalesce(failure_category, ''), coalesce(failure_subcategory, '') FROM job_run \
         WHERE failure_category IS NOT NULL OR failure_subcategory IS NOT NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect();
    let parked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lookout_ingester.parked_event").fetch_one(&db.pool).await.unwrap();
    (states, cats, parked)
}

#[tokio::test]
async fn applied_to_a_database_the_terminal_states_are_what_the_profile_says() {
    for (profile, jobs) in [(Profile::Short, 600), (Profile::Long, 3_000), (Profile::Storm, 2_000)] {
        let stream = generate(&spec(profile, Size::Jobs(jobs), 11));
        let (states, categories, parked) = apply_and_count(&stream).await;
        assert_eq!(states, stream.final_states, "{profile:?}: job states in the database");
        assert_eq!(states.values().sum::<usize>(), jobs);
        assert_eq!(parked, 0, "{profile:?}: events left parked");
        match profile {
            Profile::Long => {
                for s in [4, 5, 6, 7, 9] {
                    assert!(states.get(&s).copied().unwrap_or(0) > 0, "long: no job in state {s}");
                }
                assert!(categories.len() >= 6, "long: failure categories in job_run: {categories:?}");
            }
            Profile::Storm => {
                assert!(categories.contains(&("infrastructure".into(), "node-failure".into())));
                assert!(stream.outcomes["failed-in-storm"] > jobs / 3);
            }
            Profile::Short => {}
        }
    }
}

#[tokio::test]
async fn publishing_keeps_each_job_set_on_one_partition_in_order() {
    use futures::TryStreamExt;
    use pulsar::{Consumer, Pulsar, SubType, TokioExecutor, consumer::InitialPosition};

    let url = std::env::var("PULSAR_URL").unwrap_or_else(|_| "pulsar://127.0.0.1:6650".into());
    let admin_url = std::env::var("PULSAR_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let topic = Topic::parse(&format!("loadgen-test-{}", uuid::Uuid::new_v4().simple())).unwrap();
    Admin::new(&admin_url).create_partitioned(&topic.full(), 3).await.expect("create the topic");
    assert_eq!(Admin::new(&admin_url).partition_count(&topic.full()).await.unwrap(), 3);
    Admin::new(&admin_url).ensure_subscription(&topic.full(), "check").await.expect("subscription");
    let stream = generate(&spec(Profile::Long, Size::Jobs(400), 2));
    let mut publisher = Publisher::connect(&url, &topic, 3).await.expect("producers");
    let report =
        publisher.publish(&stream.messages, &Options { rate: None, progress: false, notify: None }).await.unwrap();
    assert_eq!(report.messages, stream.messages.len());
    assert_eq!(report.events, stream.events);
    // Batched: many messages share an entry.
    let entries: std::collections::BTreeSet<_> = report.sent.iter().map(|s| (s.partition, s.ledger, s.entry)).collect();
    assert!(
        entries.len() < stream.messages.len() / 2,
        "{} entries for {} messages",
        entries.len(),
        stream.messages.len()
    );

    let client: Pulsar<_> = Pulsar::builder(&url, TokioExecutor).build().await.unwrap();
    let mut consumer: Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(topic.full())
        .with_subscription("check")
        .with_subscription_type(SubType::Exclusive)
        .with_options(pulsar::ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .unwrap();
    let mut got: BTreeMap<u32, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    let mut n = 0;
    while n < stream.messages.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.try_next())
            .await
            .expect("messages arrive")
            .unwrap()
            .expect("stream open");
        let partition: u32 = msg.topic.rsplit("-partition-").next().unwrap().parse().unwrap();
        let key = msg.key().expect("keyed");
        got.entry(partition).or_default().push((key, msg.payload.data.clone()));
        consumer.ack(&msg).await.unwrap();
        n += 1;
    }
    for (p, messages) in &got {
        let want: Vec<(String, Vec<u8>)> = stream
            .messages
            .iter()
            .filter(|m| partition_of(&m.key, 3) == *p)
            .map(|m| (m.key.clone(), m.payload.clone()))
            .collect();
        assert_eq!(messages, &want, "partition {p}: not the stream's messages of its keys, in order");
    }
    assert!(got.len() >= 2, "all job sets on one partition");
    Admin::new(&admin_url).delete_partitioned(&topic.full()).await.unwrap();
}
