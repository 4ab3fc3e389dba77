//! All SQL for `lookout_ingester.quarantine`: messages or events that could not be used, kept whole.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::unnest::{self, bind_columns};

/// One dead letter, ready to insert.
#[derive(Debug, Clone)]
pub struct Row {
    pub source: String,
    pub ledger_id: i64,
    pub entry_id: i64,
    pub batch_index: i32,
    pub event_index: Option<i32>,
    pub publish_time: Option<DateTime<Utc>>,
    pub reason: String,
    pub error: String,
    pub sqlstate: Option<String>,
    pub event_kind: Option<String>,
    pub queue: Option<String>,
    pub jobset: Option<String>,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub payload: Vec<u8>,
}

const INSERT: &str = "
INSERT INTO lookout_ingester.quarantine
    (source, ledger_id, entry_id, batch_index, event_index, publish_time, reason, error, sqlstate, event_kind,
     queue, jobset, job_id, run_id, payload)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::int[], $6::timestamptz[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                     $15::bytea[])";

pub async fn insert(conn: &mut PgConnection, rows: &[Row]) -> sqlx::Result<u64> {
    unnest::insert(conn, INSERT, rows, |q| {
        bind_columns!(q, rows => source ledger_id entry_id batch_index event_index publish_time reason error sqlstate
            event_kind queue jobset job_id run_id payload)
    })
    .await
}
