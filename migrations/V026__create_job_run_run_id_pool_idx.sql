-- lookout-ingester: no-transaction
-- Armada Lookout migration 026: run lookups by id that also need the pool.
--
-- LOCKING: built CONCURRENTLY (SHARE UPDATE EXCLUSIVE lock on `job_run`): reads and writes continue.
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this migration runs on its own (one statement)
-- and its history row is written afterwards. IF NOT EXISTS makes a rerun after a crash between the two harmless; an
-- index left INVALID by an interrupted build is dropped and rebuilt by the migration runner.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_run_run_id_pool ON job_run (run_id, pool) WITH (fillfactor = 80);
