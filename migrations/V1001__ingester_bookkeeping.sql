-- lookout-ingester's own bookkeeping, in its own schema so that no name can clash with a table Armada adds later.
-- Nothing here touches Armada's tables; creating new, empty tables takes no lock on existing ones.

CREATE SCHEMA IF NOT EXISTS lookout_ingester;

-- Last committed position per subscription and topic partition. Written in the same transaction as the rows a
-- batch produces, so after a crash or a redelivery everything at or before it is skipped (never applied twice).
CREATE TABLE lookout_ingester.consumer_position (
    subscription  text        NOT NULL,
    topic         text        NOT NULL,  -- full partition topic name, e.g. persistent://public/default/events-partition-3
    ledger_id     bigint      NOT NULL,
    entry_id      bigint      NOT NULL,
    batch_index   integer     NOT NULL,  -- index inside a producer batch entry (0 when not batched)
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, topic)
);

-- Dead letters: messages or single events that could not be used, kept whole with the reason, so that nothing is
-- dropped silently. `event_index` is NULL when the whole message was rejected.
CREATE TABLE lookout_ingester.quarantine (
    id             bigserial   PRIMARY KEY,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    source         text        NOT NULL,  -- topic partition, or file:<path> for `apply`
    ledger_id      bigint      NOT NULL,  -- for files: 0
    entry_id       bigint      NOT NULL,  -- for files: the record number
    batch_index    integer     NOT NULL,
    event_index    integer,
    publish_time   timestamptz,
    reason         text        NOT NULL,  -- short machine-readable reason, e.g. undecodable, empty_queue, db_rejected
    error          text        NOT NULL,  -- the human-readable error
    sqlstate       text,                  -- set when Postgres rejected the rows
    event_kind     text,
    queue          text,
    jobset         text,
    job_id         text,
    run_id         text,
    payload        bytea       NOT NULL   -- the raw message, or the single event re-encoded as an EventSequence
);
CREATE INDEX quarantine_quarantined_at_idx ON lookout_ingester.quarantine (quarantined_at);
CREATE INDEX quarantine_reason_idx ON lookout_ingester.quarantine (reason);
CREATE INDEX quarantine_job_id_idx ON lookout_ingester.quarantine (job_id);

-- Events whose parent row (job, or run) does not exist yet. They are re-applied, in their original order, in the
-- batch that creates the parent; those whose parent never arrives stay here, visible and counted.
CREATE TABLE lookout_ingester.parked_event (
    id            bigserial   PRIMARY KEY,
    parked_at     timestamptz NOT NULL DEFAULT now(),
    source        text        NOT NULL,
    ledger_id     bigint      NOT NULL,
    entry_id      bigint      NOT NULL,
    batch_index   integer     NOT NULL,
    event_index   integer     NOT NULL,
    publish_time  timestamptz,
    waits_for     text        NOT NULL CHECK (waits_for IN ('job', 'run')),
    job_id        text        NOT NULL,
    run_id        text,
    event_kind    text        NOT NULL,
    queue         text        NOT NULL,
    jobset        text        NOT NULL,
    user_id       text        NOT NULL,
    event         bytea       NOT NULL,   -- the serialized armadaevents.EventSequence.Event
    UNIQUE (source, ledger_id, entry_id, batch_index, event_index)
);
CREATE INDEX parked_event_job_id_idx ON lookout_ingester.parked_event (job_id);
CREATE INDEX parked_event_run_id_idx ON lookout_ingester.parked_event (run_id);

-- Values that were changed to fit the schema (truncated, NUL removed, invalid UTF-8 replaced, unparsable quantity
-- counted as 0). The event was applied with the fixed value; the original is kept here.
CREATE TABLE lookout_ingester.sanitized_value (
    id           bigserial   PRIMARY KEY,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    source       text        NOT NULL,
    ledger_id    bigint      NOT NULL,
    entry_id     bigint      NOT NULL,
    batch_index  integer     NOT NULL,
    event_index  integer     NOT NULL,
    job_id       text,
    run_id       text,
    field        text        NOT NULL,  -- e.g. job_run.failure_category, job.annotations
    fix          text        NOT NULL,  -- truncated | nul_removed | invalid_utf8 | bad_quantity
    original     bytea       NOT NULL
);
CREATE INDEX sanitized_value_recorded_at_idx ON lookout_ingester.sanitized_value (recorded_at);
CREATE INDEX sanitized_value_job_id_idx ON lookout_ingester.sanitized_value (job_id);
