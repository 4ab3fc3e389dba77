//! `lookout_ingester_events_ignored_total` counts each ignored event once, after its batch committed: not while
//! the batch is converted, not again when the writer re-converts it (a redelivered batch) or bisects it to find
//! the events Postgres rejects. One test in its own binary, so that no other test shares the process's recorder.

mod support;

use std::str::FromStr;
use std::time::Duration;

use lookout_ingester::batch::Batch;
use lookout_ingester::convert::Converter;
use lookout_ingester::decode::decode;
use lookout_ingester::message::{MessageId, Position, RawMessage};
use lookout_ingester::proto::armadaevents::{self as ev, EventKind};
use lookout_ingester::writer::Writer;
use sqlx::postgres::PgConnectOptions;
use support::events::*;
use tokio_util::sync::CancellationToken;

/// The counter's value for one kind in the rendered metrics (0 when absent).
fn ignored(rendered: &str, kind: &str) -> f64 {
    let prefix = format!("lookout_ingester_events_ignored_total{{kind=\"{kind}\"}} ");
    rendered.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.trim().parse().expect("a number"))
}

fn batch(messages: &[Vec<u8>]) -> Batch {
    let decoded = messages
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            decode(RawMessage {
                position: Position { source: "ignored-test".into(), id: MessageId::new(1, i as i64, 0) },
                entry_size: 1,
                publish_time: T0 * 1_000_000,
                payload: payload.clone().into(),
            })
        })
        .collect();
    Converter::default().convert_batch(Batch::new(decoded))
}

#[tokio::test]
async fn ignored_events_are_counted_once_after_commit() {
    let handle = lookout_ingester::metrics::install_once().unwrap();
    let db = support::db::TestDb::migrated().await;
    // An operator's constraint that one event violates, so the batch is bisected.
    sqlx::query("ALTER TABLE job ADD CONSTRAINT no_poison CHECK (queue <> 'poison')").execute(&db.pool).await.unwrap();
    let submit = |job: &str| submit_job(job, 1, Some(pod(&[("cpu", "1")], None)), &[]);
    let cancel_request = || EventKind::CancelJob(ev::CancelJob::default());
    let marker = || EventKind::PartitionMarker(ev::PartitionMarker::default());
    let messages = vec![
        seq("q", "js").at(T0, submit("good")).at(T0, cancel_request()).encode(),
        seq("poison", "js").at(T0 + 1, submit("bad")).at(T0 + 1, cancel_request()).encode(),
        seq("q", "js").at(T0 + 2, marker()).at(T0 + 2, submit("good2")).encode(),
    ];

    let batch = batch(&messages);
    assert_eq!(batch.changes.ignored.get("cancelJob"), Some(&2), "conversion reports what it ignored");
    let rendered = handle.render();
    assert_eq!(ignored(&rendered, "cancelJob"), 0.0, "nothing is counted before the batch commits");
    assert_eq!(ignored(&rendered, "partitionMarker"), 0.0);

    let opts = PgConnectOptions::from_str(&db.url).unwrap();
    let writer = Writer::connect(opts, Converter::default(), Some("ignored-test".into()), Duration::from_millis(200))
        .await
        .unwrap()
        .with_max_attempts(3);
    let cancel = CancellationToken::new();
    let report = writer.write(&batch, &cancel).await.unwrap();
    assert!(report.isolated, "the poison event makes the writer bisect the batch");
    assert_eq!(report.quarantined, 1);
    let rendered = handle.render();
    assert_eq!(ignored(&rendered, "cancelJob"), 2.0, "each ignored event once, however often it was converted");
    assert_eq!(ignored(&rendered, "partitionMarker"), 1.0);

    // Delivered again: every message is skipped as committed, and nothing is counted again.
    let report = writer.write(&batch, &cancel).await.unwrap();
    assert_eq!(report.skipped_messages, 3);
    let rendered = handle.render();
    assert_eq!(ignored(&rendered, "cancelJob"), 2.0);
    assert_eq!(ignored(&rendered, "partitionMarker"), 1.0);
}
