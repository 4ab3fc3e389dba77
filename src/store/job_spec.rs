//! All SQL for the `job_spec` table: the zlib-compressed `api.Job` of each submitted job, inserted once.

use crate::changes::JobSpecRow;

use super::copy::CopyWriter;

pub const STAGING: &str = "
CREATE TEMP TABLE IF NOT EXISTS li_job_spec_new (job_id text, job_spec bytea) ON COMMIT DELETE ROWS;
";

pub const COPY_NEW: &str = "COPY li_job_spec_new FROM STDIN (FORMAT binary)";
/// The specs of new jobs straight into `job_spec` (`store::new_rows`).
pub const COPY_DIRECT: &str = "COPY job_spec (job_id, job_spec) FROM STDIN (FORMAT binary)";

/// Inserts the staged specs unless the job already has one (a redelivered submit keeps the first spec): the specs
/// of jobs that exist already, and of all new jobs when their direct COPY had to fall back (`store::new_rows`).
pub const INSERT: &str = "
INSERT INTO job_spec (job_id, job_spec)
SELECT n.job_id, n.job_spec FROM li_job_spec_new n ORDER BY n.job_id
ON CONFLICT (job_id) DO NOTHING";

pub fn copy_new<'a>(specs: impl Iterator<Item = &'a JobSpecRow>) -> CopyWriter {
    let mut w = CopyWriter::new(2);
    for s in specs {
        w.row().text(&s.job_id).bytes(&s.spec);
    }
    w
}
