-- Armada Lookout migration 008: free-form debug information for a run.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job_run`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run ADD COLUMN debug bytea;
