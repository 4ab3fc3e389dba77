//! Ingesting messages the way `lookout-ingester apply` does: through a delimited file, decode → convert → store.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use lookout_ingester::apply::{Summary, apply_files};
use lookout_ingester::convert::Converter;
use lookout_ingester::writer::Writer;
use sqlx::postgres::PgConnectOptions;

use super::events::delimited;

/// Applies the messages (encoded `EventSequence`s) to the database at `url`, in batches of at most
/// `batch_events` events.
pub async fn ingest(url: &str, messages: &[Vec<u8>], batch_events: usize) -> Summary {
    ingest_with(url, messages, batch_events, Converter::default()).await
}

pub async fn ingest_with(url: &str, messages: &[Vec<u8>], batch_events: usize, converter: Converter) -> Summary {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.bin");
    std::fs::write(&path, delimited(messages)).expect("write events");
    ingest_file(url, &path, batch_events, converter).await
}

pub async fn ingest_file(url: &str, path: &std::path::Path, batch_events: usize, converter: Converter) -> Summary {
    let store =
        Writer::connect(PgConnectOptions::from_str(url).expect("url"), converter, None, Duration::from_millis(200))
            .await
            .expect("store")
            .with_max_attempts(3);
    let summary = apply_files(&store, &[path], batch_events).await.expect("apply");
    super::spec_check::check_all(&sqlx::PgPool::connect(url).await.expect("connect")).await; // every stored spec
    summary
}
