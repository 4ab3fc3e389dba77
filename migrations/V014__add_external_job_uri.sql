-- Armada Lookout migration 014: a link to the job in an external system.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job ADD COLUMN external_job_uri varchar(1024);
