#!/usr/bin/env bash
# The main job, end to end on this machine: bring up PostgreSQL and Pulsar (installing what is missing), build
# lookout-ingester, apply the schema migrations, start the ingester on a Pulsar topic, publish a sample stream of
# Armada events to it (zlib-compressed producer batches, like Armada's producers), wait until every event is in
# the Lookout tables, show the rows and the ingester's metrics, and stop the ingester with SIGTERM.
#
# JOBS=200 scripts/quickstart.sh   (default 60 jobs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "[quickstart] $*" >&2; }

JOBS="${JOBS:-60}"
TOPIC="${TOPIC:-quickstart-$(date +%s)}"
METRICS_PORT="${METRICS_PORT:-9002}"

scripts/services.sh up
eval "$(scripts/services.sh env)"
export DATABASE_URL PULSAR_URL PULSAR_ADMIN_URL

say "building (release)"
cargo build --locked --release --bin lookout-ingester --example sample_events
BIN=target/release/lookout-ingester
SAMPLES=target/release/examples/sample_events

say "migrating $DATABASE_URL"
"$BIN" migrate
"$BIN" migrate status | tail -n 2

say "creating the 2-partition topic $TOPIC"
curl -sf -X PUT -H 'Content-Type: application/json' --data 2 \
    "$PULSAR_ADMIN_URL/admin/v2/persistent/public/default/$TOPIC/partitions"

LOG="$(mktemp)"
say "starting the ingester (log: $LOG, metrics: http://127.0.0.1:$METRICS_PORT/metrics)"
"$BIN" run --topic "$TOPIC" --subscription quickstart --metrics-port "$METRICS_PORT" >"$LOG" 2>&1 &
INGESTER=$!
trap 'kill "$INGESTER" 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null && break
    kill -0 "$INGESTER" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 1
done
curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null || { say "ingester not ready"; cat "$LOG"; exit 1; }

"$SAMPLES" --jobs "$JOBS" --pulsar "$PULSAR_URL" --topic "persistent://public/default/$TOPIC"
EXPECTED=$("$SAMPLES" --jobs "$JOBS" --count)
say "waiting for the $EXPECTED published events to be committed"
for _ in $(seq 1 120); do
    DONE=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^lookout_ingester_events_committed_total/ {s+=$2} END {print s+0}')
    [ "${DONE%.*}" -ge "$EXPECTED" ] && break
    sleep 1
done
say "committed ${DONE%.*} of $EXPECTED events"

say "stopping the ingester (SIGTERM)"
kill -TERM "$INGESTER"
wait "$INGESTER" && say "ingester exited 0"
trap - EXIT

say "rows in the Lookout tables (every job in the database)"
psql "$DATABASE_URL" -P pager=off -c "
  SELECT j.queue, CASE j.state WHEN 1 THEN 'QUEUED' WHEN 2 THEN 'PENDING' WHEN 3 THEN 'RUNNING' WHEN 4 THEN 'SUCCEEDED'
         WHEN 5 THEN 'FAILED' WHEN 6 THEN 'CANCELLED' WHEN 7 THEN 'PREEMPTED' WHEN 8 THEN 'LEASED' WHEN 9 THEN 'REJECTED'
         END AS state, count(*) AS jobs, sum(j.cpu) AS millicores, max(j.last_transition_time) AS last_transition
  FROM job j GROUP BY 1, 2 ORDER BY 1, 2;" -c "
  SELECT r.run_id, r.job_id, r.job_run_state AS state, r.node, r.exit_code, r.failure_category, r.failure_subcategory,
         r.leased, r.finished
  FROM job_run r ORDER BY r.leased DESC, r.run_id LIMIT 8;" -c "
  SELECT topic, ledger_id, entry_id, batch_index FROM lookout_ingester.consumer_position
  WHERE subscription = 'quickstart' ORDER BY topic;" -c "
  SELECT (SELECT count(*) FROM lookout_ingester.quarantine) AS quarantined,
         (SELECT count(*) FROM lookout_ingester.parked_event) AS parked;"

say "failure summary of the last 24 hours (lookout-ingester stats; docs/queries.md has the SQL behind it)"
"$BIN" stats --since 24h --format table
