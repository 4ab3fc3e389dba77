-- Armada Lookout migration 002: why a job was cancelled.
--
-- LOCKING: ADD COLUMN takes an ACCESS EXCLUSIVE lock on `job`. A nullable column without a default is a
-- catalog-only change (no rewrite, no scan), so the lock is held only briefly; lock_timeout stops us from
-- queueing for long behind a running query while all other queries queue behind us (rerun if it times out).
SET LOCAL lock_timeout = '10s';

ALTER TABLE job ADD COLUMN cancel_reason varchar(512);
