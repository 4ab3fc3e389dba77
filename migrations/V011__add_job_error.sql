-- Armada Lookout migration 011: the (compressed) error that ended a job, one row per job.
-- A new table: no lock on existing tables.
CREATE TABLE job_error (
    job_id varchar(32) NOT NULL,
    error  bytea       NOT NULL,
    CONSTRAINT job_error_pkey PRIMARY KEY (job_id)
);
-- Already compressed: store out of line without compressing again.
ALTER TABLE job_error ALTER COLUMN error SET STORAGE EXTERNAL;
