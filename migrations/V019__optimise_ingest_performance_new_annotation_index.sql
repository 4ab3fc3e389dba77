-- lookout-ingester: no-transaction
-- Armada Lookout migration 019: the annotations GIN index again, now with the default jsonb_ops operator class
-- (which also serves key-exists queries). fastupdate collects new entries in a pending list that is merged in bulk,
-- which makes inserts cheaper; the pending list may grow to 33554432 kB before a merge is forced.
--
-- LOCKING: built CONCURRENTLY (SHARE UPDATE EXCLUSIVE lock on `job`): reads and writes continue. Armada's file has
-- no IF NOT EXISTS; it is added here so that a rerun is harmless.
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this migration runs on its own (one statement)
-- and its history row is written afterwards. IF NOT EXISTS makes a rerun after a crash between the two harmless; an
-- index left INVALID by an interrupted build is dropped and rebuilt by the migration runner.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_annotations_path ON job USING gin (annotations jsonb_ops)
    WITH (fastupdate = true, gin_pending_list_limit = 33554432);
