-- Armada Lookout migration 013: job specs move to their own table (written once, read rarely), so job.job_spec
-- becomes optional. Lookout still falls back to job.job_spec for old rows.
--
-- LOCKING: creating the table locks nothing existing. DROP NOT NULL on `job` needs an ACCESS EXCLUSIVE lock but no
-- scan, so it is brief; lock_timeout bounds the wait for it.
SET LOCAL lock_timeout = '10s';

CREATE TABLE job_spec (
    job_id   varchar(32) NOT NULL,
    job_spec bytea       NOT NULL,  -- compressed api.Job
    CONSTRAINT job_spec_pkey PRIMARY KEY (job_id)
);
ALTER TABLE job_spec ALTER COLUMN job_spec SET STORAGE EXTERNAL;

ALTER TABLE job ALTER COLUMN job_spec DROP NOT NULL;
