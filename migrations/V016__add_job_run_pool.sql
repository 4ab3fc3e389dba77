-- Armada Lookout migration 016: the pool a run was scheduled in.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job_run`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run ADD COLUMN pool text;
