-- lookout-ingester: no-transaction
-- Armada Lookout migration 027: jobs ordered by last transition time, with job_id as tie-breaker (keyset paging).
--
-- LOCKING: built CONCURRENTLY (SHARE UPDATE EXCLUSIVE lock on `job`): reads and writes continue.
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this migration runs on its own (one statement)
-- and its history row is written afterwards. IF NOT EXISTS makes a rerun after a crash between the two harmless; an
-- index left INVALID by an interrupted build is dropped and rebuilt by the migration runner.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_ltt_jobid ON job (last_transition_time, job_id) WITH (fillfactor = 80);
