//! All SQL for `lookout_ingester.sanitized_value`: values changed to fit the schema, with their originals.

use sqlx::PgConnection;

use super::unnest::{self, bind_columns};

#[derive(Debug, Clone)]
pub struct Row {
    pub source: String,
    pub ledger_id: i64,
    pub entry_id: i64,
    pub batch_index: i32,
    pub event_index: i32,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub field: String,
    pub fix: String,
    pub original: Vec<u8>,
}

const INSERT: &str = "
INSERT INTO lookout_ingester.sanitized_value
    (source, ledger_id, entry_id, batch_index, event_index, job_id, run_id, field, fix, original)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::int[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::bytea[])";

pub async fn insert(conn: &mut PgConnection, rows: &[Row]) -> sqlx::Result<u64> {
    unnest::insert(conn, INSERT, rows, |q| {
        bind_columns!(q, rows => source ledger_id entry_id batch_index event_index job_id run_id field fix original)
    })
    .await
}
