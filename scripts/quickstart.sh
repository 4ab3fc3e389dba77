#!/usr/bin/env bash
# The main job, end to end on this machine: bring up PostgreSQL and Pulsar, build lookout-ingester, apply the
# schema migrations, ingest a sample stream of Armada events, and show the resulting Lookout rows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "[quickstart] $*" >&2; }

scripts/services.sh up
eval "$(scripts/services.sh env)"
export DATABASE_URL PULSAR_URL PULSAR_ADMIN_URL

say "building (release)"
cargo build --locked --release --bin lookout-ingester --example sample_events
BIN=target/release/lookout-ingester

say "migrating $DATABASE_URL"
"$BIN" migrate
"$BIN" migrate status | tail -n 3

SAMPLE="$(mktemp -d)/sample-events.bin"
target/release/examples/sample_events --jobs "${JOBS:-60}" --file "$SAMPLE"
say "ingesting $SAMPLE"
"$BIN" apply "$SAMPLE"

say "rows in the Lookout tables"
psql "$DATABASE_URL" -P pager=off -c "
  SELECT j.queue, CASE j.state WHEN 1 THEN 'QUEUED' WHEN 2 THEN 'PENDING' WHEN 3 THEN 'RUNNING' WHEN 4 THEN 'SUCCEEDED'
         WHEN 5 THEN 'FAILED' WHEN 6 THEN 'CANCELLED' WHEN 7 THEN 'PREEMPTED' WHEN 8 THEN 'LEASED' WHEN 9 THEN 'REJECTED'
         END AS state, count(*) AS jobs, sum(j.cpu) AS millicores
  FROM job j GROUP BY 1, 2 ORDER BY 1, 2;" -c "
  SELECT r.run_id, r.job_id, r.job_run_state AS state, r.node, r.exit_code, r.failure_category, r.failure_subcategory,
         r.leased, r.finished
  FROM job_run r ORDER BY r.leased DESC LIMIT 8;" -c "
  SELECT (SELECT count(*) FROM lookout_ingester.quarantine) AS quarantined,
         (SELECT count(*) FROM lookout_ingester.parked_event) AS parked;"
