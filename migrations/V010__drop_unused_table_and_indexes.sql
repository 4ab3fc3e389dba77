-- Armada Lookout migration 010: the annotation lookup table (annotations now live in job.annotations) and two job
-- indexes that no query used any more.
--
-- LOCKING: DROP INDEX takes an ACCESS EXCLUSIVE lock on `job` but finishes quickly (no scan); lock_timeout bounds
-- the wait for that lock. Dropping the table drops its own indexes.
SET LOCAL lock_timeout = '10s';

DROP TABLE IF EXISTS user_annotation_lookup;
DROP INDEX IF EXISTS idx_job_jobset_last_transition_time_seconds;
DROP INDEX IF EXISTS idx_job_queue_jobset_last_transition_time_seconds;
