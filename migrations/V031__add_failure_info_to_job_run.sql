-- Armada Lookout migration 031: a jsonb map describing a run's failure (exit code, termination message,
-- categories, container). Short-lived: 032 adds flat category columns and 033 drops this column again, so a
-- database at 031 or 032 may still hold values here.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job_run`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run ADD COLUMN failure_info jsonb;
