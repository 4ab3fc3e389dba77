//! All SQL for the `job_error` table: the job-level error of rejected jobs (one row per job, inserted once).

use crate::changes::JobErrorRow;

use super::copy::CopyWriter;

pub const STAGING: &str = "
CREATE TEMP TABLE IF NOT EXISTS li_job_error_new (job_id text, error bytea) ON COMMIT DELETE ROWS;
";

pub const COPY_NEW: &str = "COPY li_job_error_new FROM STDIN (FORMAT binary)";

/// Inserts the error of existing jobs unless one is stored. Errors of unknown jobs were taken out of staging
/// before (`store::orphans`) and are parked with their `JobErrors` event. The parent probe is a primary-key lookup
/// per staged row (LATERAL … LIMIT 1), never a join the planner could run as a scan of `job`.
pub const INSERT: &str = "
INSERT INTO job_error (job_id, error)
SELECT n.job_id, n.error FROM li_job_error_new n
CROSS JOIN LATERAL (SELECT 1 FROM job j WHERE j.job_id = n.job_id LIMIT 1) parent
ORDER BY n.job_id
ON CONFLICT (job_id) DO NOTHING";

pub fn copy_new<'a>(rows: impl Iterator<Item = &'a JobErrorRow>) -> CopyWriter {
    let mut w = CopyWriter::new(2);
    for r in rows {
        w.row().text(&r.job_id).bytes(&r.error);
    }
    w
}
