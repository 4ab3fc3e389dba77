//! Orphans: staged rows whose parent job or run does not exist, decided by ONE statement, so from one snapshot.
//!
//! Under READ COMMITTED each statement of a transaction sees the rows committed before *it* started. Deciding
//! orphans table by table (run inserts checking `job`, then job updates checking `job`, …) let a job committed by
//! a concurrent lane in between be missing for the first check and present for the next: a batch's new run was
//! then neither inserted nor parked (lost), and its job's terminal update applied without the run's progress.
//! Here one statement decides for every staging table at once; the rows it keeps have parents that stay (jobs and
//! runs are not deleted while events for them arrive), so every later statement of the write agrees with it.
//!
//! Parents are looked up with primary-key probes driven from the staging rows (`LATERAL … LIMIT 1`): the staging
//! tables are never analyzed, and an anti-join the planner turns into a scan of `job` costs a batch seconds on a
//! large table.

/// Removes the staged rows that lack their parent and returns `(kind, id)`. It runs first, before anything is
/// written: a job staged as new in this batch counts as existing, as does a run staged as new for an existing job.
/// - `job`, job id: a job that neither exists nor is staged; its staged updates, progress, runs and error were
///   removed;
/// - `new_run`, run id: a staged new run of such a job;
/// - `run`, run id: a run that neither exists nor is staged for an existing job; its staged update and the
///   progress points that name it were removed (the run update's events are parked; a progress point always comes
///   with one of its run's events that stages a run update or a new run, which park it).
pub const TAKE: &str = "
WITH missing_jobs AS MATERIALIZED (
    SELECT k.job_id
    FROM (SELECT job_id FROM li_job_update
          UNION SELECT job_id FROM li_job_progress
          UNION SELECT job_id FROM li_run_new
          UNION SELECT job_id FROM li_job_error_new) k
    LEFT JOIN LATERAL (SELECT true AS found FROM job j WHERE j.job_id = k.job_id LIMIT 1) j ON true
    WHERE j.found IS NULL AND NOT EXISTS (SELECT 1 FROM li_job_new s WHERE s.job_id = k.job_id)
), missing_runs AS MATERIALIZED (
    SELECT k.run_id
    FROM (SELECT run_id FROM li_run_update
          UNION SELECT run_id FROM li_job_progress WHERE run_id IS NOT NULL) k
    LEFT JOIN LATERAL (SELECT true AS found FROM job_run r WHERE r.run_id = k.run_id LIMIT 1) r ON true
    WHERE r.found IS NULL
      AND NOT EXISTS (SELECT 1 FROM li_run_new n
                      WHERE n.run_id = k.run_id AND n.job_id NOT IN (SELECT job_id FROM missing_jobs))
), job_updates AS (
    DELETE FROM li_job_update u USING missing_jobs m WHERE u.job_id = m.job_id
), progress AS (
    DELETE FROM li_job_progress p
    WHERE p.job_id IN (SELECT job_id FROM missing_jobs) OR p.run_id IN (SELECT run_id FROM missing_runs)
), job_errors AS (
    DELETE FROM li_job_error_new e USING missing_jobs m WHERE e.job_id = m.job_id
), new_runs AS (
    DELETE FROM li_run_new n USING missing_jobs m WHERE n.job_id = m.job_id RETURNING n.run_id
), run_updates AS (
    DELETE FROM li_run_update u USING missing_runs m WHERE u.run_id = m.run_id
)
SELECT 'job' AS kind, job_id AS id FROM missing_jobs
UNION ALL
SELECT 'new_run', run_id FROM new_runs
UNION ALL
SELECT 'run', run_id FROM missing_runs";

/// What a row of [`TAKE`] says is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphan {
    /// A job that does not exist (id: job id).
    Job,
    /// A new run of a job that does not exist (id: run id).
    NewRun,
    /// A run that does not exist (id: run id).
    Run,
}

impl Orphan {
    /// Reads the `kind` column of [`TAKE`].
    pub fn parse(kind: &str) -> Option<Orphan> {
        match kind {
            "job" => Some(Orphan::Job),
            "new_run" => Some(Orphan::NewRun),
            "run" => Some(Orphan::Run),
            _ => None,
        }
    }
}
