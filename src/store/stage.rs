//! Staging: sends one set of [`RowChanges`] to Postgres with binary COPY into per-connection staging tables, then
//! runs the set-based merge statements of `job.rs`, `job_run.rs` and the inserts of `job_spec.rs` and
//! `job_error.rs`. The jobs and runs the batch creates are written by `new_rows.rs`.
//! Updates, runs and errors whose parent does not exist are taken out of the staging tables by one statement
//! (`orphans.rs`) and reported as orphans (the writer parks their events).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use sqlx::{Executor, PgConnection};

use super::error::{ErrorClass, classify};
use super::new_rows::{self, Existing};
use super::orphans::{self, Orphan};
use super::parked::WaitsFor;
use super::{copy, job, job_error, job_run, job_spec};
use crate::changes::{JobRow, JobSpecRow, RowChanges, RunRow};
use crate::message::EventId;
use crate::states::{Operation, RowsWritten, Table};

/// Every staging table, created once per connection.
pub const STAGING: &[&str] = &[job::STAGING, job_spec::STAGING, job_run::STAGING, job_error::STAGING];

/// Every staging table, once: created by the `STAGING` statements above, filled by COPY, cleared between the parts
/// of an isolated batch (the tests of `store::checks` hold the three to this list).
pub const TABLES: [&str; 8] = [
    "li_job_cas",
    "li_job_new",
    "li_job_update",
    "li_job_progress",
    "li_job_spec_new",
    "li_run_new",
    "li_run_update",
    "li_job_error_new",
];

/// The statements of a write after the COPYs, by name, in the order [`write_changes`] runs them.
pub const STATEMENTS: [(&str, &str); 9] = [
    ("job::CAS", job::CAS),
    ("orphans::TAKE", orphans::TAKE),
    ("new_rows::EXISTING", new_rows::EXISTING),
    ("job::INSERT", job::INSERT),
    ("job_spec::INSERT", job_spec::INSERT),
    ("job_run::INSERT", job_run::INSERT),
    ("job::UPDATE", job::UPDATE),
    ("job_run::UPDATE", job_run::UPDATE),
    ("job_error::INSERT", job_error::INSERT),
];

/// Clears the staging tables (needed between writes inside one transaction).
static CLEAR_STAGING: LazyLock<String> =
    LazyLock::new(|| TABLES.map(|table| format!("DELETE FROM {table}")).join("; "));

/// Row counts and orphans of one write.
#[derive(Debug, Default)]
pub struct Written {
    /// Rows affected, per statement.
    pub rows: Vec<RowsWritten>,
    /// Events to park, with what they wait for.
    pub orphans: Vec<(EventId, WaitsFor)>,
    /// Jobs written by compare-and-set (`job::CAS`): their rows are as the [`CasRow`]s said.
    pub cas_written: BTreeSet<String>,
    /// Jobs the batch creates that existed already (their deltas were merged into the stored rows).
    pub existing_jobs: BTreeSet<String>,
}

/// Stages and writes one set of row changes. `force` runs every statement even when its staging is empty (to
/// clear leftovers between savepoints and to probe the statements).
///
/// Jobs and runs the batch creates are written settled (`changes::settle`) by `new_rows`, their deltas not at all;
/// only when one exists after all is its delta staged, for the guarded update like any other. Jobs in `cas`
/// (stored jobs whose columns the writer knows, merged in memory) are written first by compare-and-set; the deltas
/// of those whose guard fails are staged for the guarded update like any other.
pub async fn write_changes(
    conn: &mut PgConnection,
    changes: &RowChanges,
    cas: &[job::CasRow<'_>],
    force: bool,
) -> sqlx::Result<Written> {
    let mut out = Written::default();
    if force {
        conn.execute(CLEAR_STAGING.as_str()).await?;
    }
    let mut cas_written = BTreeSet::new();
    if force || !cas.is_empty() {
        copy_in(conn, job::COPY_CAS, job::copy_cas(cas.iter())).await?;
        let written: Vec<String> = sqlx::query_scalar(job::CAS).fetch_all(&mut *conn).await?;
        out.rows.push(RowsWritten { table: Table::Job, operation: Operation::Update, rows: written.len() as u64 });
        cas_written = written.into_iter().collect();
    }
    let job_updates =
        || changes.job_updates.iter().filter(|(id, _)| !changes.jobs.contains_key(*id) && !cas_written.contains(*id));
    let run_updates = || changes.run_updates.iter().filter(|(id, _)| !changes.runs.contains_key(*id));
    copy_in(conn, job::COPY_NEW_KEYS, job::copy_keys(changes.jobs.keys())).await?;
    copy_in(conn, job_run::COPY_NEW_KEYS, job_run::copy_keys(changes.runs.values())).await?;
    let mut staged_job_updates = copy_in(conn, job::COPY_UPDATE, job::copy_update(job_updates())).await?
        + copy_in(conn, job::COPY_PROGRESS, job::copy_progress(job_updates(), &BTreeSet::new())).await?;
    let mut staged_run_updates = copy_in(conn, job_run::COPY_UPDATE, job_run::copy_update(run_updates())).await?;
    copy_in(conn, job_error::COPY_NEW, job_error::copy_new(changes.job_errors.values())).await?;

    let any = |n: usize| force || n > 0;
    let missing_runs = if any(staged_job_updates + changes.runs.len() + staged_run_updates + changes.job_errors.len()) {
        take_orphans(conn, changes, &mut out).await?
    } else {
        BTreeSet::new()
    };

    // New rows: those that exist already are not written again; the others are written as the batch leaves them.
    let stored = if any(changes.jobs.len() + changes.runs.len()) {
        new_rows::existing(conn).await?
    } else {
        Existing::default()
    };
    let jobs: Vec<&JobRow> = changes.jobs.values().filter(|j| !stored.jobs.contains(&j.job_id)).collect();
    let specs: Vec<&JobSpecRow> = changes.job_specs.values().filter(|s| !stored.jobs.contains(&s.job_id)).collect();
    let runs: Vec<&RunRow> = changes
        .runs
        .values()
        .filter(|r| !stored.runs.contains(&r.run_id) && !missing_runs.contains(r.run_id.as_str()))
        .collect();
    let inserted = new_rows::insert(conn, changes, &jobs, &specs, &runs).await?;
    if !changes.jobs.is_empty() {
        out.rows.push(RowsWritten { table: Table::Job, operation: Operation::Insert, rows: inserted.jobs });
    }
    if !changes.runs.is_empty() {
        out.rows.push(RowsWritten { table: Table::JobRun, operation: Operation::Insert, rows: inserted.runs });
    }

    // Rows that existed after all: their deltas go to the guarded updates; a stored job keeps its spec if it has
    // one.
    let existing_jobs: BTreeSet<String> = stored.jobs.iter().chain(&inserted.existing.jobs).cloned().collect();
    let job_ids = existing_jobs.iter();
    let deltas = || job_ids.clone().filter_map(|id| changes.job_updates.get_key_value(id));
    staged_job_updates += copy_in(conn, job::COPY_UPDATE, job::copy_update(deltas())).await?
        + copy_in(conn, job::COPY_PROGRESS, job::copy_progress(deltas(), &missing_runs)).await?;
    let run_ids = stored.runs.iter().chain(&inserted.existing.runs);
    let deltas = run_ids.filter_map(|id| changes.run_updates.get_key_value(id));
    staged_run_updates += copy_in(conn, job_run::COPY_UPDATE, job_run::copy_update(deltas)).await?;
    let stored_specs = stored.jobs.iter().filter_map(|id| changes.job_specs.get(id));
    let mut specs_written = inserted.specs;
    if any(copy_in(conn, job_spec::COPY_NEW, job_spec::copy_new(stored_specs)).await?) {
        specs_written += sqlx::query(job_spec::INSERT).execute(&mut *conn).await?.rows_affected();
    }
    if !changes.job_specs.is_empty() {
        out.rows.push(RowsWritten { table: Table::JobSpec, operation: Operation::Insert, rows: specs_written });
    }

    if any(staged_job_updates) {
        counted(conn, job::UPDATE, (Table::Job, Operation::Update), &mut out).await?;
    }
    if any(staged_run_updates) {
        counted(conn, job_run::UPDATE, (Table::JobRun, Operation::Update), &mut out).await?;
    }
    if any(changes.job_errors.len()) {
        counted(conn, job_error::INSERT, (Table::JobError, Operation::Insert), &mut out).await?;
    }
    out.cas_written = cas_written;
    out.existing_jobs = existing_jobs;
    Ok(out)
}

/// Takes the staged rows that lack their parent out of staging (`orphans::TAKE`) and adds their events to
/// `out.orphans`; returns the runs found missing (progress points naming them are not to be staged).
async fn take_orphans<'a>(
    conn: &mut PgConnection,
    changes: &'a RowChanges,
    out: &mut Written,
) -> sqlx::Result<BTreeSet<&'a str>> {
    let mut missing_runs = BTreeSet::new();
    let taken: Vec<(String, String)> = sqlx::query_as(orphans::TAKE).fetch_all(&mut *conn).await?;
    for (kind, id) in taken {
        match Orphan::parse(&kind) {
            Some(Orphan::Job) => {
                if let Some(d) = changes.job_updates.get(&id) {
                    out.orphans.extend(d.sources.iter().map(|s| (*s, WaitsFor::Job)));
                }
                if let Some(e) = changes.job_errors.get(&id) {
                    out.orphans.push((e.source, WaitsFor::Job));
                }
            }
            Some(Orphan::NewRun) => {
                // The lease waits for the job; the run's other events, settled into it, for the run.
                if let Some((run_id, r)) = changes.runs.get_key_value(&id) {
                    out.orphans.push((r.source, WaitsFor::Job));
                    missing_runs.insert(run_id.as_str());
                    if let Some(d) = changes.run_updates.get(&id) {
                        out.orphans.extend(d.sources.iter().map(|s| (*s, WaitsFor::Run)));
                    }
                }
            }
            Some(Orphan::Run) => {
                // A new run (of a missing job) is reported as `new_run` too, and parked there.
                if let Some((run_id, d)) = changes.run_updates.get_key_value(&id)
                    && !changes.runs.contains_key(&id)
                {
                    out.orphans.extend(d.sources.iter().map(|s| (*s, WaitsFor::Run)));
                    missing_runs.insert(run_id.as_str());
                }
            }
            None => unreachable!("orphans::TAKE returns only the kinds Orphan parses, got {kind}"),
        }
    }
    Ok(missing_runs)
}

/// Runs one statement and records the rows it affected under (table, operation).
async fn counted(
    conn: &mut PgConnection,
    statement: &'static str,
    (table, operation): (Table, Operation),
    out: &mut Written,
) -> sqlx::Result<()> {
    let r = sqlx::query(statement).execute(&mut *conn).await?;
    out.rows.push(RowsWritten { table, operation, rows: r.rows_affected() });
    Ok(())
}

/// Checks that the statements run at all with nothing staged (under a savepoint): if they fail even so, the schema
/// is broken, not the data, and no event is to blame.
pub async fn probe(conn: &mut PgConnection) -> sqlx::Result<()> {
    conn.execute("SAVEPOINT li_probe").await?;
    write_changes(&mut *conn, &RowChanges::default(), &[], true).await?;
    conn.execute("RELEASE SAVEPOINT li_probe").await?;
    Ok(())
}

/// Writes one part of a batch under a savepoint: on success the savepoint is released; when Postgres rejects the
/// data the part is rolled back (the transaction stays usable) and the error returned.
pub async fn write_part(conn: &mut PgConnection, changes: &RowChanges) -> sqlx::Result<Written> {
    conn.execute("SAVEPOINT li_part").await?;
    match write_changes(&mut *conn, changes, &[], true).await {
        Ok(written) => {
            conn.execute("RELEASE SAVEPOINT li_part").await?;
            Ok(written)
        }
        Err(e) => {
            if classify(&e) == ErrorClass::Data {
                conn.execute("ROLLBACK TO SAVEPOINT li_part").await?;
            }
            Err(e)
        }
    }
}

/// Sends one staging table's rows with binary COPY (skipped when there are none); returns how many rows it sent.
pub(super) async fn copy_in(conn: &mut PgConnection, statement: &str, writer: copy::CopyWriter) -> sqlx::Result<usize> {
    let rows = writer.rows();
    if rows == 0 {
        return Ok(0);
    }
    let mut copy = conn.copy_in_raw(statement).await?;
    let payload = writer.finish();
    if let Err(e) = copy.send(payload).await {
        let _ = copy.abort(e.to_string()).await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(rows)
}
