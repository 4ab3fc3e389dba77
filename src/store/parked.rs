//! All SQL for `lookout_ingester.parked_event`: events waiting for their parent job or run.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::unnest::{self, bind_columns};

/// What a parked event waits for (the `waits_for` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WaitsFor {
    /// Its job (`job_id`).
    Job,
    /// Its run (`run_id`).
    Run,
}

impl WaitsFor {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitsFor::Job => "job",
            WaitsFor::Run => "run",
        }
    }

    /// Reads the column's value (anything but `run` waits for the job).
    pub fn parse(value: &str) -> Self {
        if value == "run" { WaitsFor::Run } else { WaitsFor::Job }
    }
}

/// One parked event (also what [`take`] returns).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub source: String,
    pub ledger_id: i64,
    pub entry_id: i64,
    pub batch_index: i32,
    pub event_index: i32,
    pub publish_time: Option<DateTime<Utc>>,
    pub waits_for: String,
    pub job_id: String,
    pub run_id: Option<String>,
    pub event_kind: String,
    pub queue: String,
    pub jobset: String,
    pub user_id: String,
    pub event: Vec<u8>,
}

/// Parks events; an event already parked (same position) is kept once.
const INSERT: &str = "
INSERT INTO lookout_ingester.parked_event
    (source, ledger_id, entry_id, batch_index, event_index, publish_time, waits_for, job_id, run_id, event_kind,
     queue, jobset, user_id, event)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::int[], $6::timestamptz[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[])
ON CONFLICT (source, ledger_id, entry_id, batch_index, event_index) DO NOTHING";

/// The columns a take returns (those of [`Row`]).
macro_rules! returning {
    () => {
        "RETURNING source, ledger_id, entry_id, batch_index, event_index, publish_time, waits_for, job_id, run_id,
          event_kind, queue, jobset, user_id, event"
    };
}

/// Removes and returns the events waiting for any of the given jobs or runs.
const TAKE: &str = concat!(
    "DELETE FROM lookout_ingester.parked_event
WHERE (waits_for = 'job' AND job_id = ANY($1::text[])) OR (waits_for = 'run' AND run_id = ANY($2::text[]))
",
    returning!()
);

/// A take of up to `LIMIT` parked events whose parent job or run exists now, among those the condition selects.
/// Rows another transaction is taking are skipped.
macro_rules! take_resolved {
    ($among:literal, $limit:literal) => {
        concat!(
            "DELETE FROM lookout_ingester.parked_event
WHERE ctid IN (
    SELECT p.ctid FROM lookout_ingester.parked_event p
    WHERE ",
            $among,
            "
      AND CASE WHEN p.waits_for = 'job' THEN EXISTS (SELECT 1 FROM job j WHERE j.job_id = p.job_id)
               ELSE EXISTS (SELECT 1 FROM job_run r WHERE r.run_id = p.run_id) END
    LIMIT ",
            $limit,
            "
    FOR UPDATE SKIP LOCKED)
",
            returning!()
        )
    };
}

/// Among the events waiting for the jobs `$1` or runs `$2` (after a commit), at most `$3`.
const TAKE_RESOLVED: &str = take_resolved!(
    "((p.waits_for = 'job' AND p.job_id = ANY($1::text[])) OR (p.waits_for = 'run' AND p.run_id = ANY($2::text[])))",
    "$3"
);

/// Among all parked events (the periodic sweep), at most `$1`.
const TAKE_ANY_RESOLVED: &str = take_resolved!("true", "$1");

const COUNT: &str = "SELECT count(*) FROM lookout_ingester.parked_event";

const ANY: &str = "SELECT EXISTS (SELECT 1 FROM lookout_ingester.parked_event)";

pub async fn insert(conn: &mut PgConnection, rows: &[Row]) -> sqlx::Result<u64> {
    unnest::insert(conn, INSERT, rows, |q| {
        bind_columns!(q, rows => source ledger_id entry_id batch_index event_index publish_time waits_for job_id run_id
            event_kind queue jobset user_id event)
    })
    .await
}

/// Takes the events waiting for these jobs or runs, in their original order.
pub async fn take(conn: &mut PgConnection, job_ids: &[&str], run_ids: &[&str]) -> sqlx::Result<Vec<Row>> {
    if job_ids.is_empty() && run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows: Vec<Row> = sqlx::query_as(TAKE).bind(job_ids).bind(run_ids).fetch_all(&mut *conn).await?;
    in_stream_order(&mut rows);
    Ok(rows)
}

/// Takes up to `limit` parked events whose parent job or run exists now: among those waiting for the given jobs and
/// runs, or among all when `only` is `None`. In their original order.
pub async fn take_resolved(
    conn: &mut PgConnection,
    only: Option<(&[String], &[String])>,
    limit: i64,
) -> sqlx::Result<Vec<Row>> {
    let mut rows: Vec<Row> = match only {
        Some((jobs, runs)) if jobs.is_empty() && runs.is_empty() => return Ok(Vec::new()),
        Some((jobs, runs)) => {
            sqlx::query_as(TAKE_RESOLVED).bind(jobs).bind(runs).bind(limit).fetch_all(&mut *conn).await?
        }
        None => sqlx::query_as(TAKE_ANY_RESOLVED).bind(limit).fetch_all(&mut *conn).await?,
    };
    in_stream_order(&mut rows);
    Ok(rows)
}

/// Whether any event is parked (a cheap check before looking for resolved ones).
pub async fn any(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar(ANY).fetch_one(&mut *conn).await
}

/// Sorts parked rows back into the order their events had in the stream.
fn in_stream_order(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        (&a.source, a.ledger_id, a.entry_id, a.batch_index, a.event_index).cmp(&(
            &b.source,
            b.ledger_id,
            b.entry_id,
            b.batch_index,
            b.event_index,
        ))
    });
}

pub async fn count(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(COUNT).fetch_one(&mut *conn).await
}
