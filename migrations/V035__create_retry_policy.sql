-- Armada Lookout migration 035: named retry policies and which queues use them (both written by Armada's server).
--
-- LOCKING: the foreign key to `queue` takes a SHARE ROW EXCLUSIVE lock on `queue` (a small table) while the new,
-- empty table is created; nothing else existing is locked. lock_timeout bounds the wait.
SET LOCAL lock_timeout = '10s';

CREATE TABLE retry_policy (
    name       text  NOT NULL,
    definition bytea NOT NULL,  -- serialized policy
    CONSTRAINT retry_policy_pkey PRIMARY KEY (name)
);

-- The authoritative list of policies attached to each queue; ordinal keeps the order in which they were given.
CREATE TABLE queue_retry_policy (
    queue_name  text    NOT NULL,
    policy_name text    NOT NULL,
    ordinal     integer NOT NULL,
    CONSTRAINT queue_retry_policy_pkey PRIMARY KEY (queue_name, policy_name),
    CONSTRAINT queue_retry_policy_queue_name_fkey
        FOREIGN KEY (queue_name) REFERENCES queue (name) ON DELETE CASCADE,
    -- Armada's server recognises a violation of this constraint by its name: keep the name exactly.
    CONSTRAINT queue_retry_policy_policy_name_fkey
        FOREIGN KEY (policy_name) REFERENCES retry_policy (name) ON DELETE CASCADE
);

-- policy_name is only the second column of the primary key; without this index, deleting a policy (which cascades
-- here) would scan the whole table.
CREATE INDEX idx_queue_retry_policy_policy_name ON queue_retry_policy (policy_name);
