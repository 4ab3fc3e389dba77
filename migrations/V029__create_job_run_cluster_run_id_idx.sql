-- lookout-ingester: no-transaction
-- Armada Lookout migration 029: runs by cluster.
--
-- LOCKING: built CONCURRENTLY (SHARE UPDATE EXCLUSIVE lock on `job_run`): reads and writes continue.
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this migration runs on its own (one statement)
-- and its history row is written afterwards. IF NOT EXISTS makes a rerun after a crash between the two harmless; an
-- index left INVALID by an interrupted build is dropped and rebuilt by the migration runner.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_run_cluster_run_id ON job_run (cluster, run_id) WITH (fillfactor = 80);
