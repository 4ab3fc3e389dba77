-- lookout-ingester: no-transaction
-- Armada Lookout migration 005: job annotations as jsonb, with a GIN index (jsonb_path_ops operator class: smaller
-- and faster for containment queries, but no key-exists operators). 018 drops this index and 019 replaces it.
--
-- LOCKING: Armada builds this index with a plain CREATE INDEX, which blocks all writes to `job` for the whole
-- build. Here the column is added in its own short transaction (catalog-only, brief ACCESS EXCLUSIVE lock, bounded
-- by lock_timeout) and the index is built CONCURRENTLY afterwards, so writes continue. Each step is idempotent, so a
-- rerun after a crash between the steps is harmless.
BEGIN;
SET LOCAL lock_timeout = '10s';
ALTER TABLE job ADD COLUMN IF NOT EXISTS annotations jsonb;
COMMIT;
-- lookout-ingester: step
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_annotations_path ON job USING gin (annotations jsonb_path_ops);
