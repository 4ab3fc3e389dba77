-- Armada Lookout migration 003: a run can exist before it is pending, so `pending` becomes optional, and the lease
-- time gets its own column.
--
-- LOCKING: both statements take an ACCESS EXCLUSIVE lock on `job_run` but only change the catalog (DROP NOT NULL
-- needs no scan; the new column is nullable without a default), so the lock is brief. lock_timeout as in 002.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run ALTER COLUMN pending DROP NOT NULL;
ALTER TABLE job_run ADD COLUMN leased timestamp;
