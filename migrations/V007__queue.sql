-- Armada Lookout migration 007: queue definitions (written by Armada's server, not by the ingester).
-- A new table: no lock on existing tables.
CREATE TABLE queue (
    name       text  NOT NULL,
    definition bytea NOT NULL,  -- serialized queue
    CONSTRAINT queue_pkey PRIMARY KEY (name)
);
