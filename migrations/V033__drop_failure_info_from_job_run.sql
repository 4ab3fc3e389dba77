-- Armada Lookout migration 033: the jsonb failure map from 031 goes away; 032's columns replace it. IF EXISTS,
-- like Armada's, so that this also succeeds where 031's column was never created or already removed.
--
-- LOCKING: DROP COLUMN only marks the column as dropped in the catalog (no rewrite; the space is reclaimed as rows
-- are rewritten), under a brief ACCESS EXCLUSIVE lock on `job_run`; lock_timeout bounds the wait.
SET LOCAL lock_timeout = '10s';

ALTER TABLE job_run DROP COLUMN IF EXISTS failure_info;
