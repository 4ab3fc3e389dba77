//! `replay` and `rewind` against the real Pulsar and Postgres, with the real binary: the same topic replayed twice
//! into two fresh databases, replayed after a live ingest that was SIGKILLed mid-way, a rewound window ingested again
//! by the service, and `--follow` handing over to live ingestion — each ends with tables equal, row by row (ordered
//! digests of job, job_run, job_spec and job_error), to what the `apply` path writes from the same messages. The
//! live subscription is checked untouched by a replay, and a rewind refuses while a consumer is connected and
//! reports a writer that commits after it.
//!
//! Needs `DATABASE_URL`, `PULSAR_URL`, `PULSAR_ADMIN_URL` (`scripts/services.sh up`). Small streams: seconds each.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use lookout_ingester::message::MessageId;
use lookout_ingester::proto::armadaevents::{EventKind, EventSequence};
use lookout_ingester::replay::rewind;
use lookout_ingester::replay::target::{MessageRef, PartitionRef, Target};
use lookout_ingester::source::admin::Admin;
use lookout_ingester::store::position;
use prost::Message as _;
use sqlx::{Connection, Executor};
use support::broker::*;
use support::child::*;
use support::db::{self as common, TestDb};
use support::digest::{TableDigest, assert_same_digests, digests};
use support::events::T0;
use support::http::*;
use support::snapshot::positions;
use support::stream::*;

const WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: u32 = 2;

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The digests the `apply` path gives for the messages, in a fresh database.
async fn reference(messages: &[Keyed]) -> Vec<TableDigest> {
    let db = TestDb::migrated().await;
    support::ingest::ingest(&db.url, &payloads(messages), 500).await;
    let d = digests(&db.pool).await;
    assert!(d.iter().all(|t| t.rows > 0), "the stream fills every table: {d:?}");
    d
}

/// A database name that does not exist yet (for `--create-database`); dropped at the end unless the test failed.
struct NewDb {
    url: String,
    name: String,
}

impl NewDb {
    fn new() -> NewDb {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let name = format!("li_test_{secs}_{}", short_id());
        NewDb { url: common::with_database(&common::admin_url(), &name), name }
    }

    async fn pool(&self) -> sqlx::PgPool {
        let cfg = lookout_ingester::config::PostgresConfig { url: Some(self.url.clone()), ..Default::default() };
        lookout_ingester::db::pool(&cfg).await.expect("pool on the replayed database")
    }
}

impl Drop for NewDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept database {}", self.url);
            return;
        }
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&common::admin_url()).await {
                    let _ = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
                }
            });
        })
        .join();
    }
}

/// A run of the binary: exit status, stdout, stderr.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `lookout-ingester <args>` with the configured database `db_url`, the shared broker, and a config file that
/// names the admin API; waits for it to exit (at most `WAIT`).
async fn cli(db_url: &str, args: &[&str]) -> Ran {
    let b = shared_broker();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("pulsar:\n  rest_url: \"{}\"\nbatch_size: 200\nbatch_duration: 50ms\n", b.admin))
        .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout-ingester"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("PULSAR_URL", &b.url)
        .env_remove("RUST_LOG")
        .env_remove("LOOKOUT_INGESTER_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, child).await.expect("the command finished in time").expect("run");
    let ran = Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ lookout-ingester {}\n{}{}", args.join(" "), ran.stdout, ran.stderr);
    ran
}

/// A fresh partitioned topic and subscription name, and a stream of `jobs` jobs whose first half is published
/// (keyed by job set, zlib, producer batches).
struct Case {
    b: Broker,
    topic: String,
    sub: String,
    messages: Vec<Keyed>,
    half: usize,
}

impl Case {
    async fn new(kind: &str, jobs: usize) -> Case {
        let b = shared_broker();
        let id = short_id();
        let topic = b.create_partitioned_topic(&format!("li-{kind}-{id}"), PARTITIONS).await;
        let messages = stream(&id[..6], jobs, T0);
        let half = messages.len() / 2;
        publish(&mut b.producer(&topic, true).await, &messages[..half]).await;
        Case { b, topic, sub: format!("{kind}-{id}"), messages, half }
    }

    fn second(&self) -> &[Keyed] {
        &self.messages[self.half..]
    }

    async fn publish_second(&self) {
        publish(&mut self.b.producer(&self.topic, true).await, self.second()).await;
    }
}

fn service(name: &str, db_url: &str, topic: &str, subscription: &str) -> ChildSpec {
    let b = shared_broker();
    ChildSpec {
        name: name.into(),
        database_url: db_url.into(),
        pulsar_url: b.url.clone(),
        topic: topic.into(),
        subscription: subscription.into(),
        yaml: "batch_size: 40\nbatch_duration: 20ms\nmax_backoff: 2\nshutdown_timeout: 10s\nwriters: 1\n".into(),
        log_level: "info".into(),
    }
}

/// Every partition's subscriptions.
async fn subscriptions(admin: &Admin, topic: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for p in admin.partitions(topic).await.unwrap() {
        let mut s = admin.subscriptions(&p).await.unwrap();
        s.sort();
        out.push(s);
    }
    out
}

// ------------------------------------------------------------------------------------------------ replay

/// The same topic replayed twice, into two databases the replay creates, gives identical tables — equal to the
/// `apply` path's — while a durable "live" subscription on the topic keeps its cursor and backlog, and no
/// subscription is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_topic_replayed_twice_gives_identical_tables_and_leaves_the_live_subscription_alone() {
    let b = shared_broker();
    let admin = Admin::new(&b.admin);
    let id = short_id();
    let name = format!("li-replay-{id}");
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    for p in admin.partitions(&topic).await.unwrap() {
        admin.create_subscription(&p, "live", None).await.unwrap();
    }
    let messages = stream(&id[..6], 120, T0);
    publish(&mut b.producer(&topic, true).await, &messages).await;
    let want = reference(&messages).await;
    let live_before = (b.backlogs(&topic, PARTITIONS, "live").await, subscriptions(&admin, &topic).await);
    let cursors_before: Vec<_> = mark_deletes(&b, &topic, "live").await;

    let (one, two) = (NewDb::new(), NewDb::new());
    let topic_flag = format!("--topic={topic}");
    for (db, display) in [(&one, "log"), (&two, "bar")] {
        let url = format!("--database-url={}", db.url);
        let ran = cli(
            &common::admin_url(),
            &["replay", &topic_flag, &url, "--create-database", "--progress", display, "--log-every", "100ms"],
        )
        .await;
        assert!(ran.ok, "replay failed");
        assert!(ran.stderr.contains("replay complete"), "no summary");
        if display == "log" {
            assert!(ran.stderr.contains("events/s") && ran.stderr.contains("backlog"), "no progress line");
        }
    }
    let (d1, d2) = (digests(&one.pool().await).await, digests(&two.pool().await).await);
    assert_same_digests(&d1, &d2, "two replays");
    assert_same_digests(&d1, &want, "replay vs apply");

    let live_after = (b.backlogs(&topic, PARTITIONS, "live").await, subscriptions(&admin, &topic).await);
    assert_eq!(live_after, live_before, "the live subscription's backlog, and the subscriptions, are unchanged");
    assert_eq!(mark_deletes(&b, &topic, "live").await, cursors_before, "the live cursor did not move");
    let backlog: u64 = live_after.0.unwrap().iter().sum();
    assert!(backlog > 0, "the live subscription holds a backlog");
}

async fn mark_deletes(b: &Broker, topic: &str, subscription: &str) -> Vec<Option<(i64, i64)>> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        out.push(b.mark_delete(topic, p, subscription).await);
    }
    out
}

/// A live ingest SIGKILLed mid-way leaves part of the stream; a replay into the same database (positions under the
/// same subscription name, so it continues where the killed one stopped) completes it to the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_sigkilled_live_ingest_gives_the_same_tables() {
    let c = Case::new("replay-kill", 120).await;
    let (topic, sub) = (&c.topic, &c.sub);
    let want = reference(&c.messages).await;

    let db = TestDb::migrated().await;
    let mut child = Child::spawn(&service("live", &db.url, topic, sub)).await;
    eventually("a first commit", WAIT, || async {
        positions(&db.pool, sub).await.values().any(|k| k.ledger >= 0).then_some(())
    })
    .await;
    child.kill9().await;
    c.publish_second().await;
    let partial = digests(&db.pool).await;
    assert!(partial[0].rows < want[0].rows, "the kill left part of the stream: {partial:?}");

    let ran =
        cli(&db.url, &["replay", &format!("--topic={topic}"), &format!("--subscription={sub}"), "--progress=log"])
            .await;
    assert!(ran.ok, "replay failed");
    assert_same_digests(&digests(&db.pool).await, &want, "replay after kill -9");
}

/// `--follow`: the replay catches up, creates the durable subscription at its end and ingests live what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_hands_over_to_live_ingestion() {
    let c = Case::new("replay-follow", 100).await;
    let (b, topic, sub) = (&c.b, &c.topic, &c.sub);
    let want = reference(&c.messages).await;
    let db = NewDb::new();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("pulsar:\n  rest_url: \"{}\"\nmetrics_bind: 127.0.0.1\n", b.admin)).unwrap();
    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_lookout-ingester"))
        .arg("--config")
        .arg(&config)
        .args(["replay", &format!("--topic={topic}"), &format!("--database-url={}", db.url), "--create-database"])
        .args([&format!("--subscription={sub}"), "--follow", "--metrics-port=0", "--progress=log"])
        .env("PULSAR_URL", &b.url)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn replay --follow");
    let admin = Admin::new(&b.admin);
    eventually("the hand-over subscription", WAIT, || async {
        subscriptions(&admin, topic).await.iter().all(|s| s.contains(sub)).then_some(())
    })
    .await;
    c.publish_second().await;
    b.wait_backlog_zero(topic, PARTITIONS, sub, WAIT).await;
    let pid = follow.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(WAIT, follow.wait()).await.expect("exits on SIGTERM").unwrap();
    assert!(status.success(), "replay --follow exits 0 on SIGTERM ({status})");
    assert_same_digests(&digests(&db.pool().await).await, &want, "replay, then live");

    // A second --follow on the same subscription is refused before anything is read.
    let ran =
        cli(&db.url, &["replay", &format!("--topic={topic}"), &format!("--subscription={sub}"), "--follow"]).await;
    assert!(!ran.ok && ran.stderr.contains("exists"), "a second --follow must be refused");
}

// ------------------------------------------------------------------------------------------------ rewind

/// Job ids submitted in these messages.
fn submitted(messages: &[Keyed]) -> Vec<String> {
    let mut ids = Vec::new();
    for (_, payload) in messages {
        let seq = EventSequence::decode(payload.as_slice()).unwrap();
        for e in seq.events {
            if let Some(EventKind::SubmitJob(s)) = e.event {
                ids.push(String::from_utf8(s.job_id.to_vec()).unwrap());
            }
        }
    }
    ids
}

/// The service ingests a stream; a window (the messages published after a time) is lost from the tables; `rewind`
/// refuses while the service runs, then, with it stopped, moves the subscription back to that time and clears the
/// positions; the service, started again, ingests the window again and the tables equal the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_window_is_ingested_again_by_the_service() {
    let c = Case::new("rewind", 120).await;
    let (b, topic, sub) = (&c.b, c.topic.clone(), c.sub.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.publish_second().await;
    let want = reference(&c.messages).await;

    let db = TestDb::migrated().await;
    let spec = service("live", &db.url, &topic, &sub);
    let mut child = Child::spawn(&spec).await;
    child.wait_ready(WAIT).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, WAIT).await;
    assert_same_digests(&digests(&db.pool).await, &want, "live ingest");

    let to = from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let rewind_args = ["rewind", "--to", to.as_str(), "--topic", topic.as_str(), "--subscription", sub.as_str()];
    let stored = positions(&db.pool, &sub).await;
    let ran = cli(&db.url, &rewind_args).await;
    assert!(!ran.ok && ran.stderr.contains("consumers are connected"), "rewind must refuse while the service runs");
    assert_eq!(positions(&db.pool, &sub).await, stored, "a refused rewind changes no position");
    assert_eq!(b.backlogs(&topic, PARTITIONS, &sub).await, Some(vec![0; PARTITIONS as usize]), "nor the cursor");

    child.sigterm();
    assert!(child.wait_exit(WAIT).await.success());
    // The window's jobs are lost (as after a bad deploy): only a re-ingest brings them back.
    let lost = submitted(c.second());
    assert!(!lost.is_empty());
    for table in ["job_spec", "job_error", "job_run", "job"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE job_id = ANY($1)"))
            .bind(&lost)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    assert_ne!(digests(&db.pool).await, want);

    let dry = cli(&db.url, &[&rewind_args[..], &["--dry-run"][..]].concat()).await;
    assert!(dry.ok && dry.stdout.contains("dry run"));
    assert_eq!(positions(&db.pool, &sub).await, stored, "a dry run changes nothing");
    let ran = cli(&db.url, &rewind_args).await;
    assert!(ran.ok, "rewind failed");
    let backlogs = b.backlogs(&topic, PARTITIONS, &sub).await.unwrap();
    assert!(backlogs.iter().sum::<u64>() > 0, "the cursor moved back: {backlogs:?}");
    let cleared = positions(&db.pool, &sub).await;
    assert!(cleared.iter().all(|(p, k)| *k <= stored[p]), "positions only move back: {cleared:?} from {stored:?}");
    assert!(cleared.iter().any(|(p, k)| *k < stored[p]), "positions cleared: {cleared:?} from {stored:?}");

    let child = Child::spawn(&spec).await;
    child.wait_ready(WAIT).await;
    b.wait_backlog_zero(&topic, PARTITIONS, &sub, WAIT).await;
    eventually("the window ingested again", WAIT, || async {
        let now = digests(&db.pool).await;
        (now == want).then_some(())
    })
    .await;
}

/// The rewind steps against the real broker and database, by message id: positions move back to just before the
/// target (never forward), and a writer that commits past the target after the rewind is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_by_message_id_moves_positions_back_and_reports_a_late_writer() {
    let b = shared_broker();
    let admin = Admin::new(&b.admin);
    let id = short_id();
    let (name, sub) = (format!("li-rewind-id-{id}"), format!("live-{id}"));
    let topic = b.create_partitioned_topic(&name, PARTITIONS).await;
    let partitions = admin.partitions(&topic).await.unwrap();
    for p in &partitions {
        admin.create_subscription(p, &sub, None).await.unwrap();
    }
    let messages = stream(&id[..6], 20, T0);
    publish(&mut b.producer(&topic, false).await, &messages).await;
    let db = TestDb::migrated().await;

    // Partition 0 goes back to its last message; partition 1 is not named and stays.
    let last0 = admin.last_message_id(&partitions[0]).await.unwrap().id().unwrap();
    let target =
        Target::Ids(vec![MessageRef { partition: PartitionRef::Index(0), id: MessageId { batch_index: 0, ..last0 } }]);
    let ahead: HashMap<String, MessageId> =
        partitions.iter().map(|p| (p.clone(), MessageId::new(last0.ledger, last0.entry + 1000, 0))).collect();
    let mut conn = db.pool.acquire().await.unwrap();
    position::lock(&mut conn, &sub, &partitions).await.unwrap();
    position::save(&mut conn, &sub, &ahead).await.unwrap();
    drop(conn);

    let plan = rewind::plan(&admin, &topic, &sub, &target).await.unwrap();
    assert_eq!(plan.moves.len(), 1);
    assert_eq!(plan.untouched.len(), 1);
    let moved = rewind::apply(&admin, &db.pool, &plan).await.unwrap();
    assert_eq!(moved[0].after, MessageId::new(last0.ledger, last0.entry, -1));
    let now = positions(&db.pool, &sub).await;
    assert_eq!(now[&partitions[0]], MessageId::new(last0.ledger, last0.entry, -1));
    assert_eq!(now[&partitions[1]], ahead[&partitions[1]], "an unnamed partition stays");
    assert_eq!(
        b.backlogs(&topic, PARTITIONS, &sub).await.unwrap()[0],
        1,
        "partition 0 delivers its last message again"
    );
    rewind::verify(&db.pool, &plan, Duration::ZERO).await.expect("nothing wrote since");

    // Applying it again never moves a position forward.
    rewind::apply(&admin, &db.pool, &plan).await.unwrap();
    assert_eq!(positions(&db.pool, &sub).await[&partitions[0]], MessageId::new(last0.ledger, last0.entry, -1));

    // A replica that was still running commits past the rewind point: reported.
    let mut conn = db.pool.acquire().await.unwrap();
    let late: HashMap<String, MessageId> =
        [(partitions[0].clone(), MessageId::new(last0.ledger, last0.entry, 0))].into();
    position::save(&mut conn, &sub, &late).await.unwrap();
    drop(conn);
    let err = rewind::verify(&db.pool, &plan, Duration::ZERO).await.unwrap_err();
    assert!(format!("{err:#}").contains("still running"), "{err:#}");

    // A connected consumer makes it refuse.
    let client = b.client().await;
    let _consumer: pulsar::Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(&topic)
        .with_subscription(&sub)
        .with_subscription_type(pulsar::message::proto::command_subscribe::SubType::Failover)
        .build()
        .await
        .unwrap();
    let before = positions(&db.pool, &sub).await;
    let err = rewind::apply(&admin, &db.pool, &plan).await.unwrap_err();
    assert!(format!("{err:#}").contains("consumers are connected"), "{err:#}");
    assert_eq!(positions(&db.pool, &sub).await, before);
}
