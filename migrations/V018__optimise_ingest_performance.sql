-- Armada Lookout migration 018: make ingestion cheaper. Pages of `job` and `job_run` keep 30% free space (and the
-- busiest indexes 20%) so updates find room nearby, and indexes that cost more to maintain than they saved are
-- dropped (the jsonb_path_ops annotations index is replaced in 019, the jobset pattern index is re-added in 020).
--
-- LOCKING: changing fillfactor takes only a SHARE UPDATE EXCLUSIVE lock and rewrites nothing (it applies to pages
-- written from now on). DROP INDEX takes an ACCESS EXCLUSIVE lock on the table but needs no scan, so it is brief;
-- lock_timeout bounds the wait for any of these locks.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job SET (fillfactor = 70);
ALTER INDEX idx_job_queue_last_transition_time_seconds SET (fillfactor = 80);
ALTER INDEX idx_job_queue_jobset_state SET (fillfactor = 80);
ALTER INDEX idx_job_state SET (fillfactor = 80);

DROP INDEX IF EXISTS idx_job_queue_pattern_last_transition_time_seconds;
DROP INDEX IF EXISTS idx_job_jobset_pattern;
-- No migration creates this one; Armada drops it anyway in case a deployment added it by hand.
DROP INDEX IF EXISTS idx_job_state_last_transition_time_seconds;
DROP INDEX IF EXISTS idx_job_annotations_path;

ALTER TABLE job_run SET (fillfactor = 70);
ALTER INDEX idx_job_run_job_id SET (fillfactor = 80);
ALTER INDEX idx_job_run_node SET (fillfactor = 80);

DROP INDEX IF EXISTS idx_job_run_job_id_node;
