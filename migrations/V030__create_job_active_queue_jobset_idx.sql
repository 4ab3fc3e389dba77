-- lookout-ingester: no-transaction
-- Armada Lookout migration 030: a partial index over the (queue, jobset) pairs of jobs that are still active
-- (states 1, 2, 3, 8: queued, pending, running, leased). Listing active job sets then reads only this small index.
--
-- LOCKING: built CONCURRENTLY (SHARE UPDATE EXCLUSIVE lock on `job`): reads and writes continue.
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this migration runs on its own (one statement)
-- and its history row is written afterwards. IF NOT EXISTS makes a rerun after a crash between the two harmless; an
-- index left INVALID by an interrupted build is dropped and rebuilt by the migration runner.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_active_queue_jobset ON job (queue, jobset) WITH (fillfactor = 80)
    WHERE state IN (1, 2, 3, 8);
