-- lookout-ingester: no-transaction
-- Armada Lookout migration 020: the job set prefix-match index (dropped in 018) comes back, with fillfactor 80.
--
-- LOCKING: built CONCURRENTLY (SHARE UPDATE EXCLUSIVE lock on `job`): reads and writes continue.
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this migration runs on its own (one statement)
-- and its history row is written afterwards. IF NOT EXISTS makes a rerun after a crash between the two harmless; an
-- index left INVALID by an interrupted build is dropped and rebuilt by the migration runner.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_jobset_pattern ON job (jobset varchar_pattern_ops) WITH (fillfactor = 80);
