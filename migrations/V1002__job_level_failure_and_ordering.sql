-- Job-level information the reference ingester drops (docs/compatibility.md D16), and the one ordering fact the precedence rules
-- need that cannot be derived from Armada's columns (docs/precedence.md).
--
-- LOCKING: ALTER TABLE ... ADD COLUMN takes an ACCESS EXCLUSIVE lock on `job`, which can be very large. Adding a
-- nullable column without a default only changes the catalog (no table rewrite, no scan), so the lock is held for
-- milliseconds. The risk is waiting for the lock behind a long-running query while every other query queues behind
-- us; lock_timeout makes the migration fail fast instead (rerun it when the database is quieter).
SET LOCAL lock_timeout = '10s';

ALTER TABLE job
    ADD COLUMN ingester_failure_category    varchar(63),  -- Error.failure_category of the terminal JobErrors
    ADD COLUMN ingester_failure_subcategory varchar(63),  -- Error.failure_subcategory of the terminal JobErrors
    ADD COLUMN ingester_failure_reason      varchar(63),  -- which Error reason ended the job, e.g. maxRunsExceeded
    ADD COLUMN ingester_failure_message     text,         -- its message (MaxRunsExceeded, JobRejected, ...)
    ADD COLUMN ingester_retry_policy        varchar(512), -- Error.retry_policy_name of the terminal JobErrors
    ADD COLUMN ingester_priority_at         timestamp;    -- created time of the event that set `priority`
