#!/usr/bin/env bash
# Benchmarks the lookout-ingester service end to end against a running Postgres + Pulsar (scripts/services.sh up,
# default or private instance: the same LI_* variables select it).
#
#   scripts/services.sh up
#   scripts/bench-service.sh                      # 50 000 jobs (~292k events), 4 partitions, 30 s steady phase
#   scripts/bench-service.sh --jobs 5000 --steady 0
#
# What it does:
#   1. builds target/release/lookout-ingester and the sample_events example if they are missing (--build: always);
#   2. creates a fresh database (bench_<epoch>) in the cluster of DATABASE_URL and migrates it;
#   3. publishes N jobs' events with sample_events (zlib, producer batching, keyed by job set) to a fresh partitioned
#      topic, BEFORE the service starts (a backlog);
#   4. starts `lookout-ingester run` and times the drain: from process start until the subscription backlog is 0
#      (admin REST partitioned-stats) and lookout_ingester_events_committed_total equals the published count;
#      prints events/s, messages/s, peak RSS (VmHWM), CPU seconds (utime+stime), and the publish->commit quantiles
#      from /metrics (during a drain they include the time spent waiting in the backlog);
#   5. steady phase (--steady S, 0 to skip): publishes bursts of sample_events every 250 ms at about --rate events/s
#      for S seconds to the caught-up service and prints the publish->commit quantiles of that phase alone (bucket
#      deltas of the histogram, interpolated within buckets) and the CPU used;
#   6. drops the database and the topic (--keep to keep them).
# sample_events keys each message by its job set and routes it to the key's partition, as Armada's producers do, so
# one job's events stay in one partition and in order. Use --partitions 1 for a single-partition stream.
# Needs: cargo (for the build), psql, curl, and jq or python3. Load average is printed: other work on the machine
# changes the numbers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=50000 PARTITIONS=4 STEADY=30 RATE=2000 PORT=9402 KEEP=0 BUILD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) JOBS=$2; shift 2 ;;
    --partitions) PARTITIONS=$2; shift 2 ;;
    --steady) STEADY=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --metrics-port) PORT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --build) BUILD=1; shift ;;
    -h|--help) sed -n "2,27p" "$0"; exit 0 ;;
    *) echo "bench-service: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$PARTITIONS" -ge 1 ] || { echo "bench-service: --partitions must be >= 1" >&2; exit 2; }

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
for t in psql curl awk; do command -v "$t" >/dev/null || die "$t is required"; done
if command -v jq >/dev/null; then
  json() { jq -r "$1"; }
elif command -v python3 >/dev/null; then
  # only the path this script uses: .subscriptions["NAME"].msgBacklog // -1
  json() { python3 -c 'import json,sys
d=json.load(sys.stdin); s=sys.argv[1].split("\"")[1]
print(d.get("subscriptions",{}).get(s,{}).get("msgBacklog",-1))' "$1"; }
else
  die "jq or python3 is required to read the Pulsar admin API"
fi

eval "$("$ROOT/scripts/services.sh" env)"
[ -n "${DATABASE_URL:-}" ] && [ -n "${PULSAR_URL:-}" ] && [ -n "${PULSAR_ADMIN_URL:-}" ] || die "services.sh env gave no URLs"
psql -X -Atc 'select 1' "$DATABASE_URL" >/dev/null 2>&1 || die "Postgres not reachable at $DATABASE_URL: run scripts/services.sh up"
curl -sf "$PULSAR_ADMIN_URL/admin/v2/namespaces/public" >/dev/null || die "Pulsar admin not reachable at $PULSAR_ADMIN_URL: run scripts/services.sh up"

BIN=$ROOT/target/release/lookout-ingester
GEN=$ROOT/target/release/examples/sample_events
if [ "$BUILD" = 1 ] || [ ! -x "$BIN" ] || [ ! -x "$GEN" ]; then
  say "building (release) ..."
  (cd "$ROOT" && cargo build --release --bin lookout-ingester --example sample_events) >&2
fi

STAMP=$(date +%s)
DB=bench_$STAMP
SERVER_URL=${DATABASE_URL%/*}
DB_URL=$SERVER_URL/$DB
TOPIC=bench-$STAMP
FULL_TOPIC=persistent://public/default/$TOPIC
TOPIC_API=$PULSAR_ADMIN_URL/admin/v2/persistent/public/default/$TOPIC
SUB=bench
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-service.XXXXXX")
PID=""
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  if [ "$KEEP" = 0 ]; then
    psql -X -q "$SERVER_URL/postgres" -c "drop database if exists $DB with (force)" >/dev/null 2>&1 || true
    curl -sf -X DELETE "$TOPIC_API/partitions?force=true" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  else
    say "kept: database $DB_URL, topic $FULL_TOPIC, logs in $WORK"
  fi
}
trap cleanup EXIT

metrics() { curl -sf "http://127.0.0.1:$PORT/metrics" 2>/dev/null || true; }
counter() { metrics | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s + 0 }'; }
backlog() { curl -sf "$TOPIC_API/partitioned-stats" 2>/dev/null | json ".subscriptions[\"$SUB\"].msgBacklog // -1" 2>/dev/null || echo -1; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hist() { metrics | awk '/^lookout_ingester_publish_to_commit_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); print le, $NF }'; }
# quantiles from two bucket dumps ("le count" lines): the delta between them, linear interpolation inside a bucket
quantiles() {
  awk 'FILENAME == ARGV[1] { base[$1] = $2; next }
       { le[++n] = $1; c[n] = $2 - base[$1] }
       END {
         if (n == 0 || c[n] == 0) { print "no samples"; exit }
         split("0.5 0.9 0.95 0.99", qs, " "); out = ""
         for (i = 1; i <= 4; i++) {
           r = qs[i] * c[n]; pl = 0; pc = 0; v = "?"
           for (j = 1; j <= n; j++) {
             if (c[j] >= r) { v = (le[j] == "+Inf") ? ">" pl : sprintf("%.3f", pl + (le[j] - pl) * (r - pc) / ((c[j] - pc) > 0 ? (c[j] - pc) : 1)); break }
             pl = le[j]; pc = c[j]
           }
           out = out sprintf("p%g=%ss ", qs[i] * 100, v)
         }
         printf "%s(%d messages)\n", out, c[n]
       }' "$1" "$2"
}

say "database $DB, topic $FULL_TOPIC ($PARTITIONS partitions), $JOBS jobs"
psql -X -q "$SERVER_URL/postgres" -c "create database $DB" >/dev/null
DATABASE_URL=$DB_URL "$BIN" migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; die "migrate failed"; }
curl -sf -X PUT -H 'Content-Type: application/json' --data "$PARTITIONS" "$TOPIC_API/partitions" >/dev/null \
  || die "could not create the partitioned topic $FULL_TOPIC"
TOTAL=$("$GEN" --jobs "$JOBS" --count)
t=$(now)
"$GEN" --jobs "$JOBS" --pulsar "$PULSAR_URL" --topic "$FULL_TOPIC" 2>"$WORK/publish.log" || { cat "$WORK/publish.log" >&2; die "publish failed"; }
say "published $TOTAL events (one per message) in $(calc "$(now) - $t")s"

curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" && die "port $PORT already answers: choose another with --metrics-port"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(now)
DATABASE_URL=$DB_URL PULSAR_URL=$PULSAR_URL "$BIN" run --topic "$FULL_TOPIC" --subscription "$SUB" --metrics-port "$PORT" \
  --log-format json >"$WORK/service.log" 2>&1 &
PID=$!
deadline=$(( $(date +%s) + ${BENCH_TIMEOUT:-1800} ))
while :; do
  sleep 0.2
  kill -0 "$PID" 2>/dev/null || { tail -20 "$WORK/service.log" >&2; PID=""; die "the service exited during the drain"; }
  committed=$(counter lookout_ingester_events_committed_total)
  if [ "$committed" -ge "$TOTAL" ] && [ "$(backlog)" = 0 ]; then break; fi
  [ "$(date +%s)" -lt "$deadline" ] || die "drain not finished after ${BENCH_TIMEOUT:-1800}s (committed $committed of $TOTAL, backlog $(backlog))"
done
T1=$(now)
DRAIN=$(calc "$T1 - $T0" 3)
CPU=$(ticks "$PID"); HWM=$(awk '/VmHWM/ { print $2 }' "/proc/$PID/status")
MSGS=$(counter lookout_ingester_messages_committed_total)
hist >"$WORK/h0"
: >"$WORK/empty"

echo "== drain: $TOTAL events ($MSGS messages) from a $PARTITIONS-partition backlog; load average at start $LOAD0"
echo "time to backlog 0:     ${DRAIN}s (from process start)"
echo "throughput:            $(calc "$TOTAL / $DRAIN" 0) events/s, $(calc "$MSGS / $DRAIN" 0) messages/s"
echo "CPU (utime+stime):     $(calc "$CPU / $(getconf CLK_TCK)")s = $(calc "$CPU / $(getconf CLK_TCK) * 1000000 / $TOTAL" 1) us/event"
echo "peak RSS (VmHWM):      $(calc "$HWM / 1024" 1) MiB"
echo "publish->commit:       $(quantiles "$WORK/empty" "$WORK/h0")  [includes waiting in the backlog]"
echo "rows:                  job $(psql -X -At "$DB_URL" -c "select string_agg(state || ':' || n, ' ' order by state) from (select state, count(*) n from job group by 1) s")  job_run $(psql -X -At "$DB_URL" -c "select count(*) from job_run")"

if [ "$STEADY" -gt 0 ]; then
  PERIOD=0.25
  BURST_JOBS=$(( (RATE * 6 / 4 + 34) / 35 ))   # sample_events: 35 events per 6 jobs
  [ "$BURST_JOBS" -ge 1 ] || BURST_JOBS=1
  BURST_EVENTS=$("$GEN" --jobs "$BURST_JOBS" --count)
  N=$(awk "BEGIN { print int($STEADY / $PERIOD) }")
  C0=$(ticks "$PID"); S0=$(now); slow=0
  base=$(( $(date +%s) - 3600 ))
  for i in $(seq 0 $((N - 1))); do
    d=$(awk "BEGIN { printf \"%.3f\", $S0 + $i * $PERIOD - $(now) }")
    case "$d" in -*) slow=$((slow + 1)) ;; *) sleep "$d" ;; esac
    "$GEN" --jobs "$BURST_JOBS" --start $((base + i)) --pulsar "$PULSAR_URL" --topic "$FULL_TOPIC" 2>>"$WORK/publish.log" \
      || die "steady publish failed (see $WORK/publish.log)"
  done
  S1=$(now)
  want=$((TOTAL + N * BURST_EVENTS))
  for _ in $(seq 1 300); do
    [ "$(counter lookout_ingester_events_committed_total)" -ge "$want" ] && [ "$(backlog)" = 0 ] && break
    sleep 0.2
  done
  C1=$(ticks "$PID")
  hist >"$WORK/h1"
  echo "== steady: $((N * BURST_EVENTS)) events in $(calc "$S1 - $S0" 1)s = $(calc "$N * $BURST_EVENTS / ($S1 - $S0)" 0) events/s (bursts of $BURST_EVENTS every ${PERIOD}s; late bursts: $slow)"
  echo "publish->commit:       $(quantiles "$WORK/h0" "$WORK/h1")"
  echo "CPU (utime+stime):     $(calc "($C1 - $C0) / $(getconf CLK_TCK)")s = $(calc "($C1 - $C0) / $(getconf CLK_TCK) / ($S1 - $S0) * 100" 1)% of one core"
  echo "buckets (s):           0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 300: quantiles are interpolated within them"
fi
