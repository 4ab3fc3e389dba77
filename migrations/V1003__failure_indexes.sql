-- lookout-ingester: no-transaction
-- Failure analytics (issue 10): indexes for the questions in docs/queries.md. A failed run is one whose
-- job_run_state is FAILED (4), PREEMPTED (6), LEASE_RETURNED (8) or LEASE_EXPIRED (9); every index here is partial
-- on exactly that list, so it holds failed runs only (a small share of job_run) and costs the writer nothing for
-- the others. A query must repeat the predicate `job_run_state IN (4, 6, 8, 9)` (or a subset of it) for the planner
-- to use them.
--
-- LOCKING: each index is built CONCURRENTLY (SHARE UPDATE EXCLUSIVE on the table: reads and writes continue), one
-- statement per step, outside a transaction block; the history row is written after the last step. IF NOT EXISTS
-- makes a rerun after a crash harmless, and the runner drops and rebuilds an index an interrupted build left INVALID.

-- By time window, then category / subcategory: "what failed in the last 24 hours, by category", per hour.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_run_failed_finished
    ON job_run (finished, failure_category, failure_subcategory)
    WHERE job_run_state IN (4, 6, 8, 9);
-- lookout-ingester: step
-- One category (and subcategory) over a time window: "every OOM of the last week".
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_run_failed_category
    ON job_run (failure_category, failure_subcategory, finished)
    WHERE job_run_state IN (4, 6, 8, 9);
-- lookout-ingester: step
-- By node over a time window.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_run_failed_node
    ON job_run (node, finished)
    WHERE job_run_state IN (4, 6, 8, 9);
-- lookout-ingester: step
-- By cluster (executor) over a time window.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_run_failed_cluster
    ON job_run (cluster, finished)
    WHERE job_run_state IN (4, 6, 8, 9);
-- lookout-ingester: step
-- By queue: `queue` lives on `job`. Jobs of a queue that ended unsuccessfully (FAILED 5, PREEMPTED 7, REJECTED 9)
-- over a time window; their runs are then reached through idx_job_run_job_id.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_job_failed_queue_ltt
    ON job (queue, last_transition_time)
    WHERE state IN (5, 7, 9);
