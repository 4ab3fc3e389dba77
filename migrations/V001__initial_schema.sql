-- Armada Lookout migration 001: the two core tables, the (later removed) annotation lookup table, and their
-- first indexes. Columns are listed in the physical order Armada creates them in.
-- Runs on an empty database only (an existing Armada database is adopted, not re-created), so no lock concerns;
-- plain CREATE TABLE (no IF NOT EXISTS) makes a mistaken run against a populated schema fail loudly.

CREATE TABLE job (
    job_id                       varchar(32)   NOT NULL,
    queue                        varchar(512)  NOT NULL,
    owner                        varchar(512)  NOT NULL,
    jobset                       varchar(1024) NOT NULL,
    cpu                          bigint        NOT NULL,  -- millicores
    memory                       bigint        NOT NULL,  -- bytes
    ephemeral_storage            bigint        NOT NULL,  -- bytes
    gpu                          bigint        NOT NULL,
    priority                     bigint        NOT NULL,
    submitted                    timestamp     NOT NULL,
    cancelled                    timestamp,
    state                        smallint      NOT NULL,
    last_transition_time         timestamp     NOT NULL,
    last_transition_time_seconds bigint        NOT NULL,
    job_spec                     bytea         NOT NULL,  -- relaxed to NULL by 013, when job_spec moved to its own table
    duplicate                    boolean       NOT NULL DEFAULT false,
    priority_class               varchar(63),
    latest_run_id                varchar(36),
    CONSTRAINT job_pkey PRIMARY KEY (job_id)
);
-- Compressed payloads: keep them out of line and do not try to compress them again.
ALTER TABLE job ALTER COLUMN job_spec SET STORAGE EXTERNAL;

CREATE TABLE job_run (
    run_id        varchar(36)  NOT NULL,
    job_id        varchar(32)  NOT NULL,
    cluster       varchar(512) NOT NULL,
    node          varchar(512),
    pending       timestamp    NOT NULL,  -- relaxed to NULL by 003
    started       timestamp,
    finished      timestamp,
    job_run_state smallint     NOT NULL,
    error         bytea,
    exit_code     integer,
    CONSTRAINT job_run_pkey PRIMARY KEY (run_id)
);
ALTER TABLE job_run ALTER COLUMN error SET STORAGE EXTERNAL;

-- Dropped again by 010.
CREATE TABLE user_annotation_lookup (
    job_id varchar(32)   NOT NULL,
    key    varchar(1024) NOT NULL,
    value  varchar(1024) NOT NULL,
    queue  varchar(512)  NOT NULL,
    jobset varchar(1024) NOT NULL,
    CONSTRAINT user_annotation_lookup_pkey PRIMARY KEY (job_id, key)
);

-- job: several of these are dropped or rebuilt by 010, 018 and 028.
CREATE INDEX idx_job_queue_pattern_last_transition_time_seconds ON job (queue varchar_pattern_ops, last_transition_time_seconds);
CREATE INDEX idx_job_queue_last_transition_time_seconds ON job (queue, last_transition_time_seconds);
CREATE INDEX idx_job_queue ON job (queue);
CREATE INDEX idx_job_jobset_last_transition_time_seconds ON job (jobset, last_transition_time_seconds);
CREATE INDEX idx_job_queue_jobset_last_transition_time_seconds ON job (queue, jobset, last_transition_time_seconds);
CREATE INDEX idx_job_queue_jobset_state ON job (queue, jobset, state);
CREATE INDEX idx_job_jobset_pattern ON job (jobset varchar_pattern_ops);
CREATE INDEX idx_job_state ON job (state);

-- job_run
CREATE INDEX idx_job_run_job_id ON job_run (job_id);
CREATE INDEX idx_job_run_job_id_node ON job_run (job_id, node);
CREATE INDEX idx_job_run_node ON job_run (node);

-- user_annotation_lookup
CREATE INDEX idx_user_annotation_lookup_key_value ON user_annotation_lookup (key, value);
CREATE INDEX idx_user_annotation_lookup_queue_jobset_key_value ON user_annotation_lookup (queue, jobset, key, value);
