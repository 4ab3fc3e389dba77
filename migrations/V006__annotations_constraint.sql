-- lookout-ingester: no-transaction
-- Armada Lookout migration 006: every job row must carry annotations (an empty object when there are none). Only
-- the constraint, not the column, is NOT NULL, because that can be checked without holding a strong lock.
--
-- LOCKING: adding a CHECK constraint takes an ACCESS EXCLUSIVE lock on `job`; with NOT VALID it skips the scan of
-- existing rows, so the lock is brief (and bounded by lock_timeout). VALIDATE CONSTRAINT then scans the table under
-- a SHARE UPDATE EXCLUSIVE lock, which lets reads and writes continue. The two must run in separate transactions
-- for that to help (in one transaction the strong lock would be held through the scan), hence the two steps.
-- Both steps can be rerun: the first skips an existing constraint, validating a valid constraint does nothing.
BEGIN;
SET LOCAL lock_timeout = '10s';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'job'::regclass AND conname = 'job_annotations_not_null') THEN
        ALTER TABLE job ADD CONSTRAINT job_annotations_not_null CHECK (annotations IS NOT NULL) NOT VALID;
    END IF;
END
$$;
COMMIT;
-- lookout-ingester: step
ALTER TABLE job VALIDATE CONSTRAINT job_annotations_not_null;
