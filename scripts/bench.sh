#!/usr/bin/env bash
# Benchmarks the service end to end: `lookout-ingester bench` on a private PostgreSQL cluster of its own (so its
# CPU is the benchmark's alone, and pg_stat_statements can be preloaded without touching the shared cluster) and
# the shared Pulsar of scripts/services.sh.
#
#   scripts/services.sh up
#   scripts/bench.sh --profile short --events 300000 --partitions 4 --runs 3 [--reference PATH/lookoutingester]
#   scripts/bench.sh --help                     # every option of `lookout-ingester bench`
#
# Builds target/release/lookout-ingester (cargo build --release), starts the private cluster (state in
# $BENCH_STATE_DIR, default /var/tmp/lookout-ingester-bench, port $BENCH_PG_PORT, default 55439) with
# shared_preload_libraries = pg_stat_statements, and runs the bench against it. The cluster is left running for the
# next run; stop it with: LI_STATE_DIR=/var/tmp/lookout-ingester-bench LI_PG_PORT=55439 scripts/services.sh pg stop
# Results: bench-results/ (bench.json, bench.png, the ingesters' logs), or --out DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf '[bench.sh] %s\n' "$*" >&2; }

STATE=${BENCH_STATE_DIR:-/var/tmp/lookout-ingester-bench}
PORT=${BENCH_PG_PORT:-55439}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release/lookout-ingester

if [ "${1:-}" != --help ] && [ "${1:-}" != -h ]; then
  say "building (release)"
  cargo build --locked --release --bin lookout-ingester >&2
  command -v gnuplot >/dev/null || say "gnuplot is missing (apt-get install gnuplot-nox): no chart"
  # Our own cluster: the shared one is never restarted. A restart applies the preload if it was started without.
  private() { LI_STATE_DIR=$STATE LI_PG_PORT=$PORT LI_PG_PRELOAD=pg_stat_statements "$ROOT/scripts/services.sh" "$@"; }
  private pg start
  URL=postgres://postgres@127.0.0.1:$PORT/postgres
  if [ "$(psql -X -Atc "select current_setting('shared_preload_libraries') like '%pg_stat_statements%'" "$URL")" != t ]; then
    private pg restart
  fi
  eval "$("$ROOT/scripts/services.sh" env)"
  export PULSAR_URL PULSAR_ADMIN_URL
  say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  exec "$BIN" bench --database-url "$URL" "$@"
fi
cargo build --locked --release --bin lookout-ingester >&2
exec "$BIN" bench --help
