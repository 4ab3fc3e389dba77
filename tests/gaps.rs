//! Gaps in delivery: the pipeline with its real writer on Postgres, fed by a stand-in for the broker's delivery of
//! one partition (one message per entry). When later entries arrive before earlier ones (seen after a Failover
//! takeover), nothing after the gap is committed or acknowledged until the missing entries come; a gap that
//! persists where delivery restarts (the cursor is past those entries) is accepted after a while.
//!
//! Needs `DATABASE_URL` (`scripts/services.sh up`).

mod support;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lookout_ingester::batch::Limits;
use lookout_ingester::config::Config;
use lookout_ingester::convert::Converter;
use lookout_ingester::message::{MessageId, Position, RawMessage};
use lookout_ingester::pipeline;
use lookout_ingester::source::CommitReport;
use lookout_ingester::writer::Writer;
use sqlx::postgres::PgConnectOptions;
use support::app::init_logs;
use support::db::TestDb;
use support::events::T0;
use support::snapshot::{Snapshot, assert_same, positions, reference};
use support::stream::{payloads, stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "persistent://public/default/gaps-partition-0";
const SUB: &str = "gaps";
const LEDGER: i64 = 5;

fn raw(entry: usize, payload: &[u8]) -> RawMessage {
    RawMessage {
        position: Position { source: Arc::from(TOPIC), id: MessageId::new(LEDGER, entry as i64, 0) },
        entry_size: 1,
        publish_time: 0,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// How the stand-in broker answers a gap report.
#[derive(Clone, Copy)]
enum OnGap {
    /// Delivers again from the committed position (a rewind to the last acknowledged entry).
    Rewind,
    /// Delivers again from the same later entry (the cursor itself is past the missing ones).
    SameAgain,
}

/// Runs the pipeline on `messages` delivered as: entries `0..3`, then (once they are committed) from `jump` on,
/// then as `on_gap` says whenever the writer reports a gap; stops when entry `last` is committed. Returns the
/// number of gap reports.
async fn run(db: &TestDb, messages: &[Vec<u8>], jump: usize, on_gap: OnGap, accept_after: Duration) -> usize {
    let options = PgConnectOptions::from_str(&db.url).unwrap();
    let writer = Writer::connect(options, Converter::default(), Some(SUB.into()), Duration::from_millis(200))
        .await
        .unwrap()
        .with_gap_guard(accept_after);
    let limits = Limits { max_events: 1000, max_bytes: 1 << 24, max_wait: Duration::from_millis(50) };
    let reports = Arc::new(AtomicUsize::new(0));
    let last = messages.len() as i64 - 1;
    let msgs = messages.to_vec();
    let counted = reports.clone();
    let source = move |out: mpsc::Sender<RawMessage>,
                       mut commits: mpsc::Receiver<CommitReport>,
                       cancel: CancellationToken| async move {
        let send = |from: usize| {
            let (out, msgs) = (out.clone(), msgs.clone());
            async move {
                for (i, m) in msgs.iter().enumerate().skip(from) {
                    out.send(raw(i, m)).await.unwrap();
                }
            }
        };
        for (i, m) in msgs.iter().enumerate().take(3) {
            out.send(raw(i, m)).await.unwrap();
        }
        let mut jumped = false;
        while let Some(report) = commits.recv().await {
            let done = report.committed.get(TOPIC).copied();
            if !jumped && done == Some(MessageId::new(LEDGER, 2, 0)) {
                jumped = true;
                send(jump).await;
            }
            if let Some(committed) = report.gaps.get(TOPIC) {
                counted.fetch_add(1, Ordering::SeqCst);
                match on_gap {
                    OnGap::Rewind => send(committed.entry as usize + 1).await,
                    OnGap::SameAgain => send(jump).await,
                }
            }
            if done.is_some_and(|d| d.entry == last) {
                cancel.cancel();
            }
        }
        Ok(())
    };
    let cancel = CancellationToken::new();
    let run = pipeline::run_with(source, Converter::default(), limits, Arc::new(writer), 1, cancel.clone());
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("the pipeline finished").unwrap();
    reports.load(Ordering::SeqCst)
}

/// Ten messages of a generated stream, one per entry.
fn ten(tag: &str) -> Vec<Vec<u8>> {
    payloads(&stream(tag, 2, T0))[..10].to_vec()
}

/// The messages without entries 3 and 4 (the ones a skip leaves out).
fn without_3_and_4(messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    messages.iter().enumerate().filter(|(i, _)| !(3..5).contains(i)).map(|(_, m)| m.clone()).collect()
}

/// Entries 3 and 4 arrive only after 5 to 9: the writer holds the partition back, the broker delivers again from
/// the committed position, and the tables end as if nothing had happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_entries_first_are_held_back_until_the_missing_ones_arrive() {
    init_logs();
    let db = TestDb::migrated().await;
    let messages = ten("gaps01");
    let reports = run(&db, &messages, 5, OnGap::Rewind, Duration::from_secs(3600)).await;
    assert!(reports >= 1, "no gap reported");
    let want = reference(&messages, &Config::default(), 500).await;
    assert_same(&Snapshot::read(&db.pool).await, &want);
    assert_eq!(positions(&db.pool, SUB).await[TOPIC], MessageId::new(LEDGER, 9, 0));
}

/// Delivery keeps restarting at entry 5 (the subscription's cursor is past 3 and 4): after `accept_after` the
/// gap is accepted and what follows it written; only the two missing messages are absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_that_persists_where_delivery_restarts_is_accepted() {
    init_logs();
    let db = TestDb::migrated().await;
    let messages = ten("gaps02");
    let reports = run(&db, &messages, 5, OnGap::SameAgain, Duration::from_millis(500)).await;
    assert!(reports >= 1, "no gap reported");
    let want = reference(&without_3_and_4(&messages), &Config::default(), 500).await;
    assert_same(&Snapshot::read(&db.pool).await, &want);
    assert_eq!(positions(&db.pool, SUB).await[TOPIC], MessageId::new(LEDGER, 9, 0));
}

/// `gap_accept_after: 0` turns the check off: what follows the gap is written at once, and nothing is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_check_off_what_follows_a_gap_is_written_at_once() {
    init_logs();
    let db = TestDb::migrated().await;
    let messages = ten("gaps03");
    let reports = run(&db, &messages, 5, OnGap::SameAgain, Duration::ZERO).await;
    assert_eq!(reports, 0, "a gap was reported with the check off");
    let want = reference(&without_3_and_4(&messages), &Config::default(), 500).await;
    assert_same(&Snapshot::read(&db.pool).await, &want);
}
