-- Armada Lookout migration 009: submit-time deduplication ids (written by Armada's server, pruned by age).
-- A new table and an index on it: no lock on existing tables.
CREATE TABLE job_deduplication (
    deduplication_id text      NOT NULL,
    job_id           text      NOT NULL,
    inserted         timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT job_deduplication_pkey PRIMARY KEY (deduplication_id)
);

CREATE INDEX idx_job_deduplication_inserted ON job_deduplication (inserted);
