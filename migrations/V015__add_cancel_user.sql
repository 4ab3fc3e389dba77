-- Armada Lookout migration 015: who cancelled a job.
--
-- LOCKING: catalog-only ADD COLUMN (nullable, no default) under a brief ACCESS EXCLUSIVE lock on `job`.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job ADD COLUMN cancel_user varchar(512);
