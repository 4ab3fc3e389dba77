-- Armada Lookout migration 034: why the scheduler ended a run (preemption, cancellation), as jsonb.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job_run`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run ADD COLUMN scheduler_termination_reason jsonb;
