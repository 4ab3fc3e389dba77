-- Armada Lookout migration 028: idx_job_queue is redundant: every index that starts with `queue` serves the same
-- lookups.
--
-- LOCKING: DROP INDEX takes an ACCESS EXCLUSIVE lock on `job` but needs no scan; lock_timeout bounds the wait.
SET LOCAL lock_timeout = '10s';

DROP INDEX IF EXISTS idx_job_queue;
