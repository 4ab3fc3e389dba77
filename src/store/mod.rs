//! Store: writes one batch to Postgres in **one transaction**, and retries until it has.
//!
//! Per batch (a small, constant number of round trips whatever its size):
//! 1. lock the partitions' committed positions and skip messages at or before them (redeliveries);
//! 2. take the parked events whose parent job or run this batch creates, and convert them with the batch;
//! 3. COPY (binary) the row changes into per-connection staging tables, then insert and merge them with the
//!    set-based statements of `job.rs`, `job_run.rs`, `job_spec.rs` and `job_error.rs`;
//! 4. park the events whose parent does not exist, record quarantined messages and sanitized values;
//! 5. advance the positions and commit.
//!
//! Errors are classified by SQLSTATE (spec §6 D6): connection, serialization, deadlock, resource and shutdown
//! errors are retried with jittered backoff, keeping the batch; data errors (classes 22 and 23) switch the batch to
//! *isolation*: each part is applied under a savepoint,
//! halving on failure, until the events Postgres rejects are found; they are quarantined with their SQLSTATE and
//! the rest commits. Nothing is acknowledged unless it committed.

pub mod copy;
pub mod job;
pub mod job_error;
pub mod job_run;
pub mod job_spec;
pub mod parked;
pub mod position;
pub mod quarantine;
pub mod sanitized;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use prost::Message as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Acquire, Executor, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::changes::{Quarantined, RowChanges, Sanitized};
use crate::convert::Converter;
use crate::decode::{DecodedMessage, Rejection};
use crate::message::{EventId, Position, RawMessage};
use crate::metrics as m;
use crate::proto::armadaevents::EventSequence;
use crate::proto::armadaevents::event_sequence::Event;

/// A decoded batch and its row changes, as the batch stage hands it over.
pub struct Batch {
    pub messages: Vec<DecodedMessage>,
    pub changes: RowChanges,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone)]
pub struct StoreReport {
    /// The highest committed position per source (topic partition), for acknowledgements.
    pub committed: HashMap<String, (i64, i64, i32)>,
    /// Messages skipped because an earlier transaction had already committed them.
    pub skipped_messages: usize,
    /// Messages and events this transaction committed (not counting skipped ones, nor re-applied parked events).
    pub committed_messages: usize,
    pub committed_events: usize,
    /// Rows affected per (table, operation).
    pub rows: Vec<(&'static str, &'static str, u64)>,
    pub parked: u64,
    /// Events parked by this batch, per event kind (updates whose job or run does not exist, spec §6 D20).
    pub parked_by_kind: Vec<(String, u64)>,
    pub unparked: usize,
    pub quarantined: u64,
    pub sanitized: u64,
    /// Jobs and runs this transaction created, or parked events for: once it has committed, parked events waiting
    /// for them whose parent exists are re-applied (see [`Store::reconcile`]).
    pub watch_jobs: Vec<String>,
    pub watch_runs: Vec<String>,
    /// Transactions tried before this one committed.
    pub attempts: u32,
    /// Whether poison rows had to be isolated.
    pub isolated: bool,
}

/// How an error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, serialization failure, deadlock, resources, shutdown: retry the same batch later.
    Transient,
    /// The data was rejected: isolate the offending events and quarantine them.
    Data,
}

/// Classifies a database error by SQLSTATE (spec §6 D6): data exceptions (class 22) and integrity violations
/// (23) are about the rows, so the offending events are isolated; everything else is retried.
///
/// Class 42 (syntax error or access rule violation) is deliberately *not* treated as data, although spec D6 lists
/// it: every statement's text is a constant and no event content ever reaches it, so a 42 error (a dropped column,
/// a missing privilege, a type mismatch) fails for every event alike. Isolating would quarantine the whole stream;
/// retrying keeps the batch until the schema is fixed, with the SQLSTATE in the logs and metrics.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match sqlstate(error).as_deref() {
        Some(code) if code.starts_with("22") || code.starts_with("23") => ErrorClass::Data,
        _ => ErrorClass::Transient,
    }
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("cancelled while waiting to retry")]
    Cancelled,
}

/// The writer. Owns a small dedicated pool whose connections carry the staging tables.
pub struct Store {
    pool: PgPool,
    converter: Converter,
    subscription: Option<String>,
    max_backoff: Duration,
    max_attempts: Option<u32>,
    stats: std::sync::Arc<std::sync::Mutex<Growth>>,
}

/// Rows this writer inserted into `job` and `job_run` since their statistics were last refreshed.
///
/// The merges reach stored rows by primary key, but the final `UPDATE … FROM` join is planned from the tables'
/// statistics. A table that was never analyzed (a database being rebuilt from the topic, faster than autovacuum
/// looks at it) is taken for a few pages, and the planner then scans all of it for every batch. Once analyzed, the
/// planner scales the known row density by the table's current size, so one ANALYZE is enough; the writer runs it
/// after [`ANALYZE_MIN_ROWS`] inserts, and again only after tenfold growth, outside the batch's transaction and in
/// the background (on the writer pool's spare connection). In a steady state it never runs.
#[derive(Debug, Default)]
struct Growth {
    inserted: u64,
    baseline: Option<f64>,
    running: bool,
}

/// Parked events re-applied per transaction by [`Store::reconcile`].
const RECONCILE_ROUND: i64 = 10_000;

const ANALYZE_MIN_ROWS: u64 = 5_000;
const ANALYZE_GROWTH: f64 = 9.0;

/// Row counts and orphans of one apply.
#[derive(Default)]
struct Applied {
    rows: Vec<(&'static str, &'static str, u64)>,
    /// Events to park, with what they wait for (`job` or `run`).
    to_park: Vec<(EventId, &'static str)>,
}

impl Store {
    /// Builds the writer pool for one writer (see [`Store::connect_lanes`]).
    pub async fn connect(
        options: sqlx::postgres::PgConnectOptions,
        converter: Converter,
        subscription: Option<String>,
        max_backoff: Duration,
    ) -> sqlx::Result<Store> {
        Self::connect_lanes(options, converter, subscription, max_backoff, 1).await
    }

    /// Builds the writer pool for `lanes` concurrent writers: one connection each, plus two spares (statistics
    /// refresh, the parked-event sweep, reconnects). Concurrent writes must touch disjoint partitions, as the
    /// pipeline's lanes do.
    pub async fn connect_lanes(
        options: sqlx::postgres::PgConnectOptions,
        converter: Converter,
        subscription: Option<String>,
        max_backoff: Duration,
        lanes: usize,
    ) -> sqlx::Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(lanes.max(1) as u32 + 2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET temp_buffers = '64MB'").await?;
                    for ddl in STAGING {
                        conn.execute(*ddl).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        Ok(Store { pool, converter, subscription, max_backoff, max_attempts: None, stats: Default::default() })
    }

    /// Gives up (with [`StoreError::GaveUp`]) after this many failed transactions instead of retrying forever.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    pub fn converter(&self) -> &Converter {
        &self.converter
    }

    /// Writes the batch, retrying transient failures with backoff until it commits, `cancel` fires while waiting,
    /// or the attempt limit is reached.
    pub async fn write(&self, batch: &Batch, cancel: &CancellationToken) -> Result<StoreReport, StoreError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut isolate = false;
        let mut delay = Duration::from_millis(250);
        loop {
            attempts += 1;
            match self.attempt(batch, isolate).await {
                Ok(mut report) => {
                    report.attempts = attempts;
                    report.isolated = isolate;
                    m::record_store(&report, started.elapsed());
                    self.refresh_statistics(&report).await;
                    self.reconcile_after(&report).await;
                    return Ok(report);
                }
                Err(e) => {
                    let class = classify(&e);
                    m::db_error(sqlstate(&e).as_deref(), class);
                    if class == ErrorClass::Data && !isolate {
                        tracing::warn!(error = %e, sqlstate = ?sqlstate(&e), "batch rejected; isolating the offending events");
                        isolate = true;
                        continue;
                    }
                    if self.max_attempts.is_some_and(|max| attempts >= max) {
                        return Err(StoreError::GaveUp { attempts, last: e.to_string() });
                    }
                    let jitter = rand::random_range(0.5..1.0);
                    let wait = delay.mul_f64(jitter);
                    tracing::warn!(error = %e, sqlstate = ?sqlstate(&e), attempt = attempts, retry_in = ?wait, "batch not stored; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err(StoreError::Cancelled),
                    }
                    delay = (delay * 2).min(self.max_backoff);
                }
            }
        }
    }

    async fn attempt(&self, batch: &Batch, isolate: bool) -> sqlx::Result<StoreReport> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut report = StoreReport::default();

        // 1. positions: lock, and skip what is already committed.
        let mut highest: HashMap<String, (i64, i64, i32)> = HashMap::new();
        for msg in &batch.messages {
            let p = &msg.raw.position;
            let entry = highest.entry(p.source.to_string()).or_insert(p.key());
            if p.key() > *entry {
                *entry = p.key();
            }
        }
        let committed = match &self.subscription {
            Some(sub) => {
                let topics: Vec<String> = highest.keys().cloned().collect();
                position::lock(&mut tx, sub, &topics).await?
            }
            None => HashMap::new(),
        };
        let fresh: Vec<&DecodedMessage> = batch
            .messages
            .iter()
            .filter(|msg| {
                let p = &msg.raw.position;
                committed.get(p.source.as_ref()).is_none_or(|done| p.key() > *done)
            })
            .collect();
        report.skipped_messages = batch.messages.len() - fresh.len();
        report.committed_messages = fresh.len();
        report.committed_events = fresh.iter().map(|m| m.event_count()).sum();

        // 2. parked events whose parent this batch creates.
        let Taken { messages: parked_msgs, created } = take_parked(&mut tx, &self.converter, &fresh).await?;
        report.unparked = parked_msgs.len();
        let view: Vec<&DecodedMessage> = parked_msgs.iter().chain(fresh.iter().copied()).collect();
        let reconverted;
        let changes: &RowChanges = if parked_msgs.is_empty() && report.skipped_messages == 0 {
            &batch.changes
        } else {
            reconverted = self.converter.convert(&view, &|_| true);
            &reconverted
        };

        // 3. rows.
        let mut rejected: Vec<Quarantined> = Vec::new();
        let applied = if isolate {
            self.isolate(&mut tx, &view, &mut rejected).await?
        } else {
            apply(&mut tx, changes, false).await?
        };
        report.rows = applied.rows;

        // 4. park orphans, record dead letters and sanitized values.
        let park_rows = parked_rows(&view, &applied.to_park);
        report.parked = parked::insert(&mut tx, &park_rows).await?;
        (report.watch_jobs, report.watch_runs) = watch_list(created, &park_rows);
        for row in &park_rows {
            match report.parked_by_kind.iter_mut().find(|(k, _)| *k == row.event_kind) {
                Some((_, n)) => *n += 1,
                None => report.parked_by_kind.push((row.event_kind.clone(), 1)),
            }
        }
        let quarantine_rows: Vec<quarantine::Row> =
            changes.quarantined.iter().chain(&rejected).map(|q| quarantine_row(&view, q)).collect();
        report.quarantined = quarantine::insert(&mut tx, &quarantine_rows).await?;
        // Re-applied parked events come first in the view; their values were recorded when they were first seen.
        let first_seen: Vec<Sanitized> =
            changes.sanitized.iter().filter(|s| s.source.message as usize >= parked_msgs.len()).cloned().collect();
        let sanitized_rows: Vec<sanitized::Row> = first_seen
            .iter()
            .map(|s| {
                let msg = view[s.source.message as usize];
                let p = &msg.raw.position;
                sanitized::Row {
                    source: p.source.to_string(),
                    ledger_id: p.ledger_id,
                    entry_id: p.entry_id,
                    batch_index: p.batch_index,
                    event_index: (msg.event_base + s.source.event) as i32,
                    job_id: s.job_id.as_deref().map(strip_nul),
                    run_id: s.run_id.as_deref().map(strip_nul),
                    field: s.field.to_string(),
                    fix: s.fix.to_string(),
                    original: s.original.clone(),
                }
            })
            .collect();
        report.sanitized = sanitized::insert(&mut tx, &sanitized_rows).await?;

        // 5. positions, commit.
        if let Some(sub) = &self.subscription {
            position::save(&mut tx, sub, &highest).await?;
        }
        tx.commit().await?;
        report.committed = highest;
        m::record_outcomes(&quarantine_rows, &first_seen);
        Ok(report)
    }

    /// Applies the batch event by event group, under savepoints, halving on data errors, and returns what applied;
    /// events Postgres rejects on their own are added to `rejected`.
    async fn isolate(
        &self,
        conn: &mut PgConnection,
        view: &[&DecodedMessage],
        rejected: &mut Vec<Quarantined>,
    ) -> sqlx::Result<Applied> {
        // If the statements fail even with nothing staged, the schema is broken, not the data: no event is to
        // blame, so fail the attempt (it is retried with backoff) instead of quarantining everything.
        conn.execute("SAVEPOINT li_probe").await?;
        apply(&mut *conn, &RowChanges::default(), true).await?;
        conn.execute("RELEASE SAVEPOINT li_probe").await?;

        let units: Vec<EventId> = view
            .iter()
            .enumerate()
            .flat_map(|(i, msg)| {
                let n = msg.body.as_ref().map(|s| s.events.len()).unwrap_or(0);
                (0..n).map(move |e| EventId { message: i as u32, event: e as u32 })
            })
            .collect();
        let mut total = Applied::default();
        // Ranges of `units` still to apply, processed in order (the stack's top is the earliest range).
        let mut pending: Vec<(usize, usize)> = vec![(0, units.len())];
        while let Some((lo, hi)) = pending.pop() {
            if lo >= hi {
                continue;
            }
            let wanted: BTreeSet<EventId> = units[lo..hi].iter().copied().collect();
            let part = self.converter.convert(view, &|id| wanted.contains(&id));
            conn.execute("SAVEPOINT li_part").await?;
            match apply(&mut *conn, &part, true).await {
                Ok(applied) => {
                    conn.execute("RELEASE SAVEPOINT li_part").await?;
                    total.rows.extend(applied.rows);
                    total.to_park.extend(applied.to_park);
                }
                Err(e) if classify(&e) == ErrorClass::Data => {
                    conn.execute("ROLLBACK TO SAVEPOINT li_part").await?;
                    if hi - lo == 1 {
                        let id = units[lo];
                        tracing::warn!(error = %e, "quarantining an event Postgres rejects");
                        let db = e.as_database_error().map(|d| d.message().to_string()).unwrap_or(e.to_string());
                        rejected.push(Quarantined {
                            message: id.message,
                            event: Some(id.event),
                            reason: "db_rejected",
                            error: db,
                            sqlstate: sqlstate(&e),
                            event_kind: None,
                            job_id: None,
                            run_id: None,
                        });
                    } else {
                        let mid = lo + (hi - lo) / 2;
                        pending.push((mid, hi));
                        pending.push((lo, mid));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Starts a background ANALYZE of `job` and `job_run` when they have grown enough since the last look (see
    /// [`Growth`]). Failures are logged, never fatal: autovacuum does the same job, only later.
    async fn refresh_statistics(&self, report: &StoreReport) {
        let inserted: u64 = report
            .rows
            .iter()
            .filter(|(table, op, _)| *op == "insert" && (*table == "job" || *table == "job_run"))
            .map(|(_, _, n)| n)
            .sum();
        {
            let mut g = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            g.inserted += inserted;
            let baseline = g.baseline.unwrap_or(0.0).max(0.0);
            if g.running || g.inserted < ANALYZE_MIN_ROWS || (g.inserted as f64) < baseline * ANALYZE_GROWTH {
                return;
            }
            g.running = true;
            g.inserted = 0;
        }
        let (pool, stats) = (self.pool.clone(), self.stats.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result: sqlx::Result<f64> = async {
                let mut conn = pool.acquire().await?;
                conn.execute("ANALYZE job; ANALYZE job_run").await?;
                let rows: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'job'::regclass")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(f64::from(rows))
            }
            .await;
            let mut g = stats.lock().unwrap_or_else(|e| e.into_inner());
            g.running = false;
            match result {
                Ok(rows) => {
                    g.baseline = Some(rows);
                    tracing::info!(job_rows = rows, took = ?started.elapsed(), "refreshed job and job_run statistics");
                }
                Err(e) => {
                    // Back off so a failing ANALYZE (e.g. not the table owner) is not retried every batch.
                    g.baseline = Some(g.baseline.unwrap_or(0.0).max(1.0) * 2.0);
                    tracing::warn!(error = %e, "could not analyze job and job_run; relying on autovacuum");
                }
            }
        });
    }

    /// After a commit. A concurrent transaction (another lane, or another replica) may have parked an event whose
    /// parent this one created, or created the parent of an event this one parked: neither saw the other's
    /// uncommitted rows. Whichever of the two commits last finds the pair here, so the event is applied now instead
    /// of waiting for ever. A failure is logged and left to the periodic sweep ([`Store::reconcile`] with `None`).
    async fn reconcile_after(&self, report: &StoreReport) {
        if report.watch_jobs.is_empty() && report.watch_runs.is_empty() {
            return;
        }
        match self.reconcile(Some((&report.watch_jobs, &report.watch_runs))).await {
            Ok(0) => {}
            Ok(n) => {
                m::reconciled("after_commit", n);
                tracing::info!(events = n, "re-applied parked events whose parent a concurrent transaction created");
            }
            Err(e) => tracing::warn!(error = %e, "could not re-check parked events after a commit (the sweep will)"),
        }
    }

    /// Re-applies parked events whose parent job or run exists now: those waiting for the given jobs and runs, or
    /// all of them (`None`, the periodic sweep, in rounds of [`RECONCILE_ROUND`]). Each round is one transaction:
    /// the events are taken, applied with the events waiting for what they create, and whatever still lacks a
    /// parent is parked again. Returns the number of events taken.
    pub async fn reconcile(&self, only: Option<(&[String], &[String])>) -> sqlx::Result<usize> {
        let mut conn = self.pool.acquire().await?;
        if !parked::any(&mut conn).await? {
            return Ok(0);
        }
        let (mut total, mut rounds, mut isolate) = (0, 0, false);
        while rounds < 16 {
            match self.reconcile_round(&mut conn, only, isolate).await {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    rounds += 1;
                    if only.is_some() {
                        break;
                    }
                }
                Err(e) if classify(&e) == ErrorClass::Data && !isolate => isolate = true,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    async fn reconcile_round(
        &self,
        conn: &mut PgConnection,
        only: Option<(&[String], &[String])>,
        isolate: bool,
    ) -> sqlx::Result<usize> {
        let mut tx = conn.begin().await?;
        let rows = parked::take_resolved(&mut tx, only, RECONCILE_ROUND).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let taken = rows.len();
        let mut messages: Vec<DecodedMessage> = rows.into_iter().map(unparked_message).collect();
        let refs: Vec<&DecodedMessage> = messages.iter().collect();
        let waiting = take_parked(&mut tx, &self.converter, &refs).await?;
        messages.extend(waiting.messages);
        in_stream_order(&mut messages);
        let view: Vec<&DecodedMessage> = messages.iter().collect();
        let mut rejected: Vec<Quarantined> = Vec::new();
        let applied = if isolate {
            self.isolate(&mut tx, &view, &mut rejected).await?
        } else {
            apply(&mut tx, &self.converter.convert(&view, &|_| true), false).await?
        };
        parked::insert(&mut tx, &parked_rows(&view, &applied.to_park)).await?;
        // Only what Postgres rejects now is new: everything else about these events was recorded when they were
        // first seen.
        let quarantine_rows: Vec<quarantine::Row> = rejected.iter().map(|q| quarantine_row(&view, q)).collect();
        quarantine::insert(&mut tx, &quarantine_rows).await?;
        tx.commit().await?;
        m::record_outcomes(&quarantine_rows, &[]);
        Ok(taken)
    }

    /// The number of parked events (for the gauge).
    pub async fn parked_count(&self) -> sqlx::Result<i64> {
        let mut conn = self.pool.acquire().await?;
        parked::count(&mut conn).await
    }
}

/// Every staging table, created once per connection.
const STAGING: &[&str] = &[job::STAGING, job_spec::STAGING, job_run::STAGING, job_error::STAGING];

/// Clears the staging tables (needed between applies inside one transaction).
const CLEAR_STAGING: &str = "DELETE FROM li_job_new; DELETE FROM li_job_update; DELETE FROM li_job_progress; \
    DELETE FROM li_job_spec_new; DELETE FROM li_run_new; DELETE FROM li_run_update; DELETE FROM li_job_error_new";

/// Stages and writes one set of row changes. `force` runs every statement even when its staging is empty (to
/// clear leftovers between savepoints and to probe the statements).
async fn apply(conn: &mut PgConnection, changes: &RowChanges, force: bool) -> sqlx::Result<Applied> {
    let mut out = Applied::default();
    if force {
        conn.execute(CLEAR_STAGING).await?;
    }
    copy_in(conn, job::COPY_NEW, job::copy_new(changes.jobs.values())).await?;
    copy_in(conn, job_spec::COPY_NEW, job_spec::copy_new(changes.job_specs.values())).await?;
    copy_in(conn, job::COPY_UPDATE, job::copy_update(changes.job_updates.iter())).await?;
    copy_in(conn, job::COPY_PROGRESS, job::copy_progress(changes)).await?;
    copy_in(conn, job_run::COPY_NEW, job_run::copy_new(changes.runs.values())).await?;
    copy_in(conn, job_run::COPY_UPDATE, job_run::copy_update(changes.run_updates.iter())).await?;
    copy_in(conn, job_error::COPY_NEW, job_error::copy_new(changes.job_errors.values())).await?;

    let any = |n: usize| force || n > 0;
    if any(changes.jobs.len()) {
        let r = sqlx::query(job::INSERT).execute(&mut *conn).await?;
        out.rows.push(("job", "insert", r.rows_affected()));
    }
    if any(changes.job_specs.len()) {
        let r = sqlx::query(job_spec::INSERT).execute(&mut *conn).await?;
        out.rows.push(("job_spec", "insert", r.rows_affected()));
    }
    if any(changes.runs.len()) {
        let r = sqlx::query(job_run::INSERT).execute(&mut *conn).await?;
        out.rows.push(("job_run", "insert", r.rows_affected()));
    }
    // Orphans: updates whose job or run does not exist, and runs of unknown jobs.
    if any(changes.job_updates.len()) {
        let orphans: Vec<String> = sqlx::query_scalar(job::TAKE_ORPHANS).fetch_all(&mut *conn).await?;
        for job_id in orphans {
            if let Some(d) = changes.job_updates.get(&job_id) {
                out.to_park.extend(d.sources.iter().map(|s| (*s, "job")));
            }
            if let Some(e) = changes.job_errors.get(&job_id) {
                out.to_park.push((e.source, "job"));
            }
        }
    }
    if any(changes.runs.len() + changes.run_updates.len()) {
        let orphans: Vec<(String, String)> = sqlx::query_as(job_run::TAKE_ORPHANS).fetch_all(&mut *conn).await?;
        for (kind, run_id) in orphans {
            if kind == "new" {
                if let Some(r) = changes.runs.get(&run_id) {
                    out.to_park.push((r.source, "job"));
                }
            } else if let Some(d) = changes.run_updates.get(&run_id) {
                out.to_park.extend(d.sources.iter().map(|s| (*s, "run")));
            }
        }
    }
    if any(changes.job_updates.len()) {
        let r = sqlx::query(job::UPDATE).execute(&mut *conn).await?;
        out.rows.push(("job", "update", r.rows_affected()));
    }
    if any(changes.run_updates.len()) {
        let r = sqlx::query(job_run::UPDATE).execute(&mut *conn).await?;
        out.rows.push(("job_run", "update", r.rows_affected()));
    }
    if any(changes.job_errors.len()) {
        let r = sqlx::query(job_error::INSERT).execute(&mut *conn).await?;
        out.rows.push(("job_error", "insert", r.rows_affected()));
    }
    Ok(out)
}

/// Sends one staging table's rows with binary COPY (skipped when there are none).
async fn copy_in(conn: &mut PgConnection, statement: &str, writer: copy::CopyWriter) -> sqlx::Result<()> {
    if writer.rows() == 0 {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(statement).await?;
    let payload = writer.finish();
    if let Err(e) = copy.send(payload).await {
        let _ = copy.abort(e.to_string()).await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}

/// What [`take_parked`] took, and every job and run that the given messages and the taken ones create.
struct Taken {
    messages: Vec<DecodedMessage>,
    created: (Vec<String>, Vec<String>),
}

/// Takes, in rounds, the parked events whose parent the batch creates (a parked lease creates a run, which can
/// release events waiting for that run), and returns them as single-event messages in their original order.
async fn take_parked(conn: &mut PgConnection, converter: &Converter, fresh: &[&DecodedMessage]) -> sqlx::Result<Taken> {
    let (mut jobs, mut runs) = converter.created_ids(fresh);
    let mut created = (jobs.clone(), runs.clone());
    let mut out: Vec<DecodedMessage> = Vec::new();
    let mut rounds = 0;
    while (!jobs.is_empty() || !runs.is_empty()) && rounds < 8 {
        rounds += 1;
        let job_refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
        let run_refs: Vec<&str> = runs.iter().map(String::as_str).collect();
        let rows = parked::take(conn, &job_refs, &run_refs).await?;
        if rows.is_empty() {
            break;
        }
        let taken: Vec<DecodedMessage> = rows.into_iter().map(unparked_message).collect();
        let refs: Vec<&DecodedMessage> = taken.iter().collect();
        (jobs, runs) = converter.created_ids(&refs);
        created.0.extend(jobs.iter().cloned());
        created.1.extend(runs.iter().cloned());
        out.extend(taken);
    }
    in_stream_order(&mut out);
    Ok(Taken { messages: out, created })
}

/// Sorts messages back into the order they had in the stream.
fn in_stream_order(messages: &mut [DecodedMessage]) {
    messages.sort_by(|a, b| (&a.raw.position, a.event_base).cmp(&(&b.raw.position, b.event_base)));
}

/// The jobs and runs created (as [`take_parked`] found them), and those the parked rows wait for, each sorted and
/// once.
fn watch_list(created: (Vec<String>, Vec<String>), parked: &[parked::Row]) -> (Vec<String>, Vec<String>) {
    let (mut jobs, mut runs) = created;
    for row in parked {
        match (row.waits_for.as_str(), &row.run_id) {
            ("run", Some(run)) => runs.push(run.clone()),
            _ => jobs.push(row.job_id.clone()),
        }
    }
    for ids in [&mut jobs, &mut runs] {
        ids.sort();
        ids.dedup();
    }
    (jobs, runs)
}

/// Rebuilds a single-event message from a parked row.
fn unparked_message(row: parked::Row) -> DecodedMessage {
    let position = Position {
        source: row.source.as_str().into(),
        ledger_id: row.ledger_id,
        entry_id: row.entry_id,
        batch_index: row.batch_index,
    };
    let publish_time = row.publish_time.map(|t| t.timestamp_micros()).unwrap_or(0);
    let body = match Event::decode(row.event.as_slice()) {
        Ok(event) => Ok(EventSequence {
            queue: row.queue.into_bytes().into(),
            job_set_name: row.jobset.into_bytes().into(),
            user_id: row.user_id.into_bytes().into(),
            groups: Vec::new(),
            events: vec![event],
        }),
        Err(e) => Err(Rejection::Undecodable(format!("parked event no longer decodes: {e}"))),
    };
    DecodedMessage {
        raw: RawMessage { position, entry_size: 1, publish_time, payload: row.event.into() },
        event_base: row.event_index as u32,
        body,
    }
}

/// Parked-event rows for the given events (each event once, first reason wins).
fn parked_rows(view: &[&DecodedMessage], to_park: &[(EventId, &'static str)]) -> Vec<parked::Row> {
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (id, waits_for) in to_park {
        if !seen.insert(*id) {
            continue;
        }
        let msg = view[id.message as usize];
        let Ok(seq) = &msg.body else { continue };
        let Some(event) = seq.events.get(id.event as usize) else { continue };
        let (job_id, run_id) = crate::convert::event_keys(event);
        let p = &msg.raw.position;
        rows.push(parked::Row {
            source: p.source.to_string(),
            ledger_id: p.ledger_id,
            entry_id: p.entry_id,
            batch_index: p.batch_index,
            event_index: (msg.event_base + id.event) as i32,
            publish_time: chrono::DateTime::from_timestamp_micros(msg.raw.publish_time),
            waits_for: waits_for.to_string(),
            job_id: strip_nul(&job_id.unwrap_or_default()),
            run_id: run_id.as_deref().map(strip_nul),
            event_kind: crate::convert::event_kind(event).to_string(),
            queue: strip_nul(&String::from_utf8_lossy(&seq.queue)),
            jobset: strip_nul(&String::from_utf8_lossy(&seq.job_set_name)),
            user_id: strip_nul(&String::from_utf8_lossy(&seq.user_id)),
            event: event.encode_to_vec(),
        });
    }
    rows
}

/// The quarantine row for a message (`event` None) or one of its events. An event's payload is that event alone,
/// re-encoded as an `EventSequence` with the message's queue, job set, user and groups.
fn quarantine_row(view: &[&DecodedMessage], q: &Quarantined) -> quarantine::Row {
    let msg = view[q.message as usize];
    let p = &msg.raw.position;
    let seq = msg.body.as_ref().ok();
    let text = |b: &[u8]| strip_nul(&String::from_utf8_lossy(b));
    let mut row = quarantine::Row {
        source: p.source.to_string(),
        ledger_id: p.ledger_id,
        entry_id: p.entry_id,
        batch_index: p.batch_index,
        event_index: q.event.map(|e| (msg.event_base + e) as i32),
        publish_time: chrono::DateTime::from_timestamp_micros(msg.raw.publish_time),
        reason: q.reason.to_string(),
        error: strip_nul(&q.error),
        sqlstate: q.sqlstate.clone(),
        event_kind: q.event_kind.map(str::to_string),
        queue: seq.map(|s| text(&s.queue)),
        jobset: seq.map(|s| text(&s.job_set_name)),
        job_id: q.job_id.as_deref().map(strip_nul),
        run_id: q.run_id.as_deref().map(strip_nul),
        payload: msg.raw.payload.to_vec(),
    };
    if let (Some(seq), Some(e)) = (seq, q.event)
        && let Some(event) = seq.events.get(e as usize)
    {
        let (job_id, run_id) = crate::convert::event_keys(event);
        row.job_id = row.job_id.or(job_id.as_deref().map(strip_nul));
        row.run_id = row.run_id.or(run_id.as_deref().map(strip_nul));
        row.event_kind = row.event_kind.or(Some(crate::convert::event_kind(event).to_string()));
        row.payload = EventSequence {
            queue: seq.queue.clone(),
            job_set_name: seq.job_set_name.clone(),
            user_id: seq.user_id.clone(),
            groups: seq.groups.clone(),
            events: vec![event.clone()],
        }
        .encode_to_vec();
    }
    row
}

/// One column of rows, for binding as an array to an `unnest(…)` insert.
fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Postgres text cannot hold U+0000.
fn strip_nul(s: &str) -> String {
    s.replace('\0', "")
}
