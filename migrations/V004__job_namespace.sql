-- Armada Lookout migration 004: the Kubernetes namespace of a job.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job ADD COLUMN namespace varchar(512);
