-- Armada Lookout migration 032: flat failure classification of a run (at most 63 characters each).
--
-- LOCKING: catalog-only ADD COLUMNs (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job_run`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run ADD COLUMN failure_category varchar(63);
ALTER TABLE job_run ADD COLUMN failure_subcategory varchar(63);
