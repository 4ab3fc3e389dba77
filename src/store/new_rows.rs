//! New rows: the jobs, job specs and runs a batch creates, written straight into their tables.
//!
//! The batch's new jobs and runs are settled in memory (`changes::settle`), so each is one final row. Which of them
//! exist already (a redelivered submit or lease, a replay) is asked first, by key ([`EXISTING`]); the others are
//! COPYed (binary) directly into `job`, `job_spec` and `job_run`, under a savepoint, with no staging table and no
//! `INSERT … SELECT`. Only if that COPY meets a row that appeared in between (`unique_violation`: a concurrent lane
//! or replica inserted the same key) is it rolled back to the savepoint and replaced by the staged inserts
//! (`job::INSERT`, `job_spec::INSERT`, `job_run::INSERT`), which skip existing rows and report them.

use std::collections::BTreeSet;

use sqlx::{Executor, PgConnection};

use super::stage::copy_in as copy;
use super::{job, job_run, job_spec, sqlstate};
use crate::changes::{JobRow, JobSpecRow, RowChanges, RunRow, settle};

/// Which staged new jobs (`li_job_new`) and runs (`li_run_new`) exist already: `(kind, id)` with kind `job` or
/// `run`. Probes by key per staged row, never a join the planner could run as a scan of `job` or `job_run`; the job
/// probe also covers Lookout's hot/cold variant, whose primary key is `(job_id, state)`.
pub const EXISTING: &str = "
SELECT 'job' AS kind, s.job_id AS id FROM li_job_new s
CROSS JOIN LATERAL (SELECT 1 FROM job j WHERE j.job_id = s.job_id LIMIT 1) e
UNION ALL
SELECT 'run', s.run_id FROM li_run_new s
CROSS JOIN LATERAL (SELECT 1 FROM job_run r WHERE r.run_id = s.run_id LIMIT 1) e";

/// The new jobs and runs that exist already.
#[derive(Debug, Default)]
pub struct Existing {
    pub jobs: BTreeSet<String>,
    pub runs: BTreeSet<String>,
}

/// Asks which staged new jobs and runs exist already.
pub async fn existing(conn: &mut PgConnection) -> sqlx::Result<Existing> {
    let rows: Vec<(String, String)> = sqlx::query_as(EXISTING).fetch_all(&mut *conn).await?;
    let mut out = Existing::default();
    for (kind, id) in rows {
        if kind == "job" {
            out.jobs.insert(id)
        } else {
            out.runs.insert(id)
        };
    }
    Ok(out)
}

/// What [`insert`] wrote, and the rows it found existing after all (their deltas go to the guarded updates).
#[derive(Debug, Default)]
pub struct Inserted {
    pub jobs: u64,
    pub specs: u64,
    pub runs: u64,
    pub existing: Existing,
}

/// Writes new jobs (settled with the batch's `changes`), their specs and new runs: COPY straight into the tables,
/// or, when a key turned out to exist meanwhile, the staged inserts.
pub async fn insert(
    conn: &mut PgConnection,
    changes: &RowChanges,
    jobs: &[&JobRow],
    specs: &[&JobSpecRow],
    runs: &[&RunRow],
) -> sqlx::Result<Inserted> {
    if jobs.is_empty() && specs.is_empty() && runs.is_empty() {
        return Ok(Inserted::default());
    }
    let settled_jobs = || jobs.iter().map(|j| settle::job(j, changes.job_updates.get(&j.job_id), &changes.runs));
    let settled_runs = || runs.iter().map(|r| settle::run(r, changes.run_updates.get(&r.run_id)));
    let specs_writer = || job_spec::copy_new(specs.iter().copied());

    conn.execute("SAVEPOINT li_new_rows").await?;
    let direct = async {
        copy(conn, job::COPY_DIRECT, job::copy_new(settled_jobs())).await?;
        copy(conn, job_spec::COPY_DIRECT, specs_writer()).await?;
        copy(conn, job_run::COPY_DIRECT, job_run::copy_new(settled_runs())).await.map(drop)
    };
    match direct.await {
        Ok(()) => {
            conn.execute("RELEASE SAVEPOINT li_new_rows").await?;
            return Ok(Inserted {
                jobs: jobs.len() as u64,
                specs: specs.len() as u64,
                runs: runs.len() as u64,
                existing: Existing::default(),
            });
        }
        Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
            tracing::debug!(error = %e, "a new row appeared meanwhile; inserting the batch's new rows by statement");
            conn.execute("ROLLBACK TO SAVEPOINT li_new_rows; RELEASE SAVEPOINT li_new_rows").await?;
        }
        Err(e) => return Err(e),
    }

    // The staged inserts: the staging tables hold the keys of every new row (and maybe rows of an earlier part).
    conn.execute("DELETE FROM li_job_new; DELETE FROM li_job_spec_new; DELETE FROM li_run_new").await?;
    copy(conn, job::COPY_NEW, job::copy_new(settled_jobs())).await?;
    copy(conn, job_spec::COPY_NEW, specs_writer()).await?;
    copy(conn, job_run::COPY_NEW, job_run::copy_new(settled_runs())).await?;
    let mut out = Inserted::default();
    let found: Vec<String> = sqlx::query_scalar(job::INSERT).fetch_all(&mut *conn).await?;
    out.jobs = (jobs.len() - found.len()) as u64;
    out.existing.jobs = found.into_iter().collect();
    out.specs = sqlx::query(job_spec::INSERT).execute(&mut *conn).await?.rows_affected();
    let found: Vec<String> = sqlx::query_scalar(job_run::INSERT).fetch_all(&mut *conn).await?;
    out.runs = (runs.len() - found.len()) as u64;
    out.existing.runs = found.into_iter().collect();
    Ok(out)
}
