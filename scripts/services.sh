#!/usr/bin/env bash
# Local services for lookout-ingester: a private PostgreSQL cluster and an
# Apache Pulsar standalone, without Docker. Meant for a Debian 12 box, run as root.
#
#   scripts/services.sh up [--fresh]    install what is missing, start both, wait until ready, print URLs
#   scripts/services.sh down            stop both
#   scripts/services.sh status          what runs: PIDs, ports, readiness (exit 0 only if both are ready)
#   scripts/services.sh env             export lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh pg     start|stop|restart        one service, data kept
#   scripts/services.sh pulsar start|stop|restart|kill   kill = kill -9, data kept
#
# See scripts/SERVICES.md for the environment variables and measurements.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PULSAR_SRC="$HERE/pulsar"

STATE_DIR="${LI_STATE_DIR:-/var/tmp/lookout-ingester}"
CACHE_DIR="${LI_CACHE_DIR:-${HOME:-/root}/.cache/lookout-ingester}"
PG_PORT="${LI_PG_PORT:-55433}"
PULSAR_PORT="${LI_PULSAR_PORT:-6650}"
PULSAR_WEB_PORT="${LI_PULSAR_WEB_PORT:-8080}"
PULSAR_BOOKIE_PORT="${LI_PULSAR_BOOKIE_PORT:-3181}"
PULSAR_HEAP="${LI_PULSAR_HEAP:-768m}"
PULSAR_DIRECT="${LI_PULSAR_DIRECT_MEM:-512m}"
READY_TIMEOUT="${LI_READY_TIMEOUT:-240}"
PULSAR_VERSION="${LI_PULSAR_VERSION:-$(sed -n 's:.*<pulsar.version>\(.*\)</pulsar.version>.*:\1:p' "$PULSAR_SRC/pom.xml" | head -n1)}"

PG_DB=lookout
PG_USER=postgres
PG_DIR="$STATE_DIR/postgres"
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"

PULSAR_DIR="$STATE_DIR/pulsar"
PULSAR_CONF="$PULSAR_DIR/standalone.conf"
PULSAR_META="$PULSAR_DIR/data/metadata"
PULSAR_BK="$PULSAR_DIR/data/bookkeeper"
PULSAR_PID="$PULSAR_DIR/pulsar.pid"
PULSAR_LOG="$STATE_DIR/logs/pulsar.log"
PULSAR_OUT="$STATE_DIR/logs/pulsar.out"

M2_REPO="$CACHE_DIR/m2"
PULSAR_LIB="$CACHE_DIR/pulsar-$PULSAR_VERSION/lib"

DATABASE_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB"
PULSAR_URL="pulsar://127.0.0.1:$PULSAR_PORT"
PULSAR_ADMIN_URL="http://127.0.0.1:$PULSAR_WEB_PORT"

# ---------------------------------------------------------------- helpers

say() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# true if something accepts TCP connections on 127.0.0.1:$1
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid of whatever listens on 127.0.0.1:$1 (empty if unknown)
port_owner() {
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1
}

# ---------------------------------------------------------------- installation

pg_bindir() {
  local d
  d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)"
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then printf '%s\n' "$d"; fi
}

java_major() { # major version of the java binary $1, or 0
  local v
  v="$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1)"
  v="${v#1.}"
  printf '%s\n' "${v%%.*}" | grep -E '^[0-9]+$' || echo 0
}

find_java() { # a java >= 17: JAVA_HOME, PATH, then /usr/lib/jvm
  local c
  for c in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    if [ "$(java_major "$c")" -ge 17 ]; then printf '%s\n' "$c"; return 0; fi
  done
  return 1
}

ensure_packages() {
  local missing=()
  [ -n "$(pg_bindir)" ] || missing+=(postgresql)
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  find_java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v ss >/dev/null 2>&1 || missing+=(iproute2)
  command -v make >/dev/null 2>&1 || missing+=(make) # jemalloc, the service's allocator, is built from C
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  [ "${#missing[@]}" -eq 0 ] && return 0
  is_root || die "missing packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  [ -n "$(pg_bindir)" ] || die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin after install"
  find_java >/dev/null || die "no Java 17+ runtime after install"
}

# ---------------------------------------------------------------- PostgreSQL

PG_BIN=""
pg_init_bin() {
  [ -n "$PG_BIN" ] && return 0
  PG_BIN="$(pg_bindir)"
  [ -n "$PG_BIN" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (run: $0 up)"
}

# run a PostgreSQL server command as the postgres OS user (the server refuses root);
# fd 9 (the lock) is closed so that a started server does not hold it
as_pg() {
  if is_root; then
    runuser -u "$PG_USER" -- "$@" 9>&-
  else
    "$@" 9>&-
  fi
}

pg_psql() { # psql as superuser over TCP, extra args passed through
  "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -v ON_ERROR_STOP=1 "$@"
}

pg_pid() { # postmaster pid if our cluster runs
  local pid
  [ -f "$PG_DATA/postmaster.pid" ] || return 1
  pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres >/dev/null 2>&1 \
    && [ "$(pg_psql -d postgres -Atc 'select 1' 2>/dev/null)" = 1 ]
}

pg_write_conf() { # settings we own, rewritten at every start (so LI_PG_PORT is honoured)
  as_pg tee "$PG_DATA/lookout-ingester.conf" >/dev/null <<EOF
# Written by scripts/services.sh at every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
shared_buffers = 256MB
jit = off
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  # LI_PG_PRELOAD (e.g. pg_stat_statements): shared_preload_libraries, for a private benchmark cluster
  if [ -n "${LI_PG_PRELOAD:-}" ]; then
    printf "shared_preload_libraries = '%s'\npg_stat_statements.track = top\n" "$LI_PG_PRELOAD" \
      | as_pg tee -a "$PG_DATA/lookout-ingester.conf" >/dev/null
  fi
}

pg_setup() {
  pg_init_bin
  if ! id -u "$PG_USER" >/dev/null 2>&1; then
    is_root || die "OS user '$PG_USER' is missing and we are not root"
    say "creating OS user $PG_USER"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$PG_USER" \
      || die "useradd $PG_USER failed"
  fi
  mkdir -p "$PG_DIR"
  if is_root; then chown "$PG_USER:" "$PG_DIR"; fi
  chmod 755 "$STATE_DIR"
  as_pg test -w "$PG_DIR" \
    || die "OS user $PG_USER cannot write $PG_DIR (a parent dir is not traversable?); set LI_STATE_DIR"
  as_pg mkdir -p "$PG_SOCK"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    local locale=C
    if locale -a 2>/dev/null | grep -qix 'c.utf-\?8'; then locale=C.UTF-8; fi
    say "postgres: initdb $PG_DATA (PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), UTF8, locale $locale)"
    rm -rf "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_USER" --encoding=UTF8 --locale="$locale" \
      --auth-local=trust --auth-host=trust >"$PG_DIR/initdb.log" 2>&1 \
      || { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed (log: $PG_DIR/initdb.log)"; }
    printf "\ninclude_if_exists = 'lookout-ingester.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
  fi
  if is_root; then chown -R "$PG_USER:" "$PG_DIR"; fi
}

pg_start() {
  pg_setup
  local pid
  if pid="$(pg_pid)"; then
    say "postgres: already running (pid $pid)"
  else
    if port_open "$PG_PORT"; then
      die "port $PG_PORT is taken by another process (pid $(port_owner "$PG_PORT")); set LI_PG_PORT"
    fi
    pg_write_conf
    say "postgres: starting on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT" -s start \
      || { tail -n 20 "$PG_LOG" >&2; die "postgres did not start (log: $PG_LOG)"; }
  fi
  pg_wait_ready
  if [ "$(pg_psql -d postgres -Atc "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    say "postgres: creating database $PG_DB"
    pg_psql -d postgres -c "create database $PG_DB" || die "create database $PG_DB failed"
  fi
  [ "$(pg_psql -d "$PG_DB" -Atc 'select 1')" = 1 ] || die "postgres: cannot query database $PG_DB"
}

pg_wait_ready() {
  local i
  for ((i = 0; i < READY_TIMEOUT * 2; i++)); do
    pg_ready && { say "postgres: ready ($DATABASE_URL)"; return 0; }
    pg_pid >/dev/null || { tail -n 20 "$PG_LOG" >&2; die "postgres exited during startup (log: $PG_LOG)"; }
    sleep 0.5
  done
  tail -n 20 "$PG_LOG" >&2
  die "postgres not ready after ${READY_TIMEOUT}s (log: $PG_LOG)"
}

pg_stop() {
  local pid
  if ! pid="$(pg_pid)"; then
    say "postgres: not running"
    return 0
  fi
  pg_init_bin
  say "postgres: stopping (pid $pid)"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop || {
    say "postgres: fast stop failed, sending SIGQUIT"
    kill -QUIT "$pid" 2>/dev/null || true
    sleep 2
  }
  ! pg_pid >/dev/null || die "postgres (pid $pid) did not stop"
}

pg_status() {
  local pid
  if ! pid="$(pg_pid)"; then
    echo "postgres: stopped (data: $PG_DATA)"
    return 1
  fi
  pg_init_bin
  if pg_ready; then
    echo "postgres: running  pid $pid  port $PG_PORT  ready    $DATABASE_URL"
  else
    echo "postgres: running  pid $pid  port $PG_PORT  NOT READY (log: $PG_LOG)"
    return 1
  fi
}

# ---------------------------------------------------------------- Pulsar

JAVA=""
pulsar_init_java() {
  [ -n "$JAVA" ] && return 0
  JAVA="$(find_java)" || die "no Java 17+ runtime found (run: $0 up)"
}

pulsar_resolve() { # jars into $PULSAR_LIB, once per version
  [ -f "$PULSAR_LIB/.complete" ] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found (run: $0 up)"
  pulsar_init_java
  local tmp="$PULSAR_LIB.tmp" log="$CACHE_DIR/mvn-pulsar-$PULSAR_VERSION.log"
  mkdir -p "$CACHE_DIR"
  rm -rf "$tmp"
  say "pulsar: resolving Apache Pulsar $PULSAR_VERSION jars with Maven (first time only; log: $log)"
  if ! JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVA")")")" mvn -B -ntp \
      -s "$PULSAR_SRC/settings.xml" -f "$PULSAR_SRC/pom.xml" \
      -Dmaven.repo.local="$M2_REPO" -Dpulsar.version="$PULSAR_VERSION" \
      -Dli.build.dir="$CACHE_DIR/mvn-build" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    grep -E '^\[ERROR\]' "$log" | head -n 1 | cut -c1-600 >&2
    die "Maven could not resolve Pulsar $PULSAR_VERSION (log: $log)"
  fi
  touch "$tmp/.complete"
  rm -rf "$PULSAR_LIB"
  mv "$tmp" "$PULSAR_LIB"
  say "pulsar: $(find "$PULSAR_LIB" -name '*.jar' | wc -l) jars, $(du -sh "$PULSAR_LIB" | cut -f1) in $PULSAR_LIB"
}

pulsar_pid() { # pid if our standalone runs
  local pid
  [ -f "$PULSAR_PID" ] || return 1
  pid="$(cat "$PULSAR_PID" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q PulsarStandaloneStarter || return 1
  printf '%s\n' "$pid"
}

# The bookie keeps the address in its cookie from its first start on; report that port.
pulsar_bookie_port() {
  local p
  p="$(sed -n 's/^bookieHost: ".*:\([0-9]*\)"$/\1/p' "$PULSAR_BK/current/VERSION" 2>/dev/null | head -n1)"
  printf '%s\n' "${p:-$PULSAR_BOOKIE_PORT}"
}

pulsar_ready() {
  curl -sf -m 5 "$PULSAR_ADMIN_URL/admin/v2/namespaces/public" 2>/dev/null | grep -q '"public/default"'
}

pulsar_write_conf() {
  mkdir -p "$PULSAR_DIR" "$STATE_DIR/logs"
  {
    cat "$PULSAR_SRC/standalone.conf"
    printf '\n# ---- appended by scripts/services.sh (ports from the environment) ----\n'
    printf 'brokerServicePort=%s\nwebServicePort=%s\n' "$PULSAR_PORT" "$PULSAR_WEB_PORT"
  } >"$PULSAR_CONF"
}

# The admin API answers before the broker can store anything, and after a kill -9 the standalone's bookie sometimes
# does not come back (seen with 4.0.7: it re-registers in a loop, then "Bookie is not running any more"), which only
# shows when a topic is used. Creating a topic opens a ledger on the bookie, so it proves the broker can write.
pulsar_can_write() {
  local t="$PULSAR_ADMIN_URL/admin/v2/persistent/public/default/li-write-probe-$$-$RANDOM"
  curl -sf -m 20 -X PUT "$t" >/dev/null 2>&1 || return 1
  curl -sf -m 20 -X DELETE "$t?force=true" >/dev/null 2>&1 || true
}

# Starts the standalone (or finds it running), waits until it is ready and can write; one that cannot is restarted
# once.
pulsar_start() {
  pulsar_start_process
  pulsar_can_write && return 0
  say "pulsar: ready but cannot create a topic (bookie down?); restarting it once (log: $PULSAR_LOG)"
  pulsar_stop
  pulsar_start_process
  pulsar_can_write || die "pulsar cannot create a topic after a restart (logs: $PULSAR_LOG, $PULSAR_OUT)"
}

pulsar_start_process() {
  local pid p
  if pid="$(pulsar_pid)"; then
    say "pulsar: already running (pid $pid)"
    pulsar_wait_ready "$pid"
    return 0
  fi
  local bk
  bk="$(pulsar_bookie_port)"
  if [ "$bk" != "$PULSAR_BOOKIE_PORT" ]; then
    say "pulsar: the existing bookie keeps port $bk from its cookie (LI_PULSAR_BOOKIE_PORT=$PULSAR_BOOKIE_PORT applies after up --fresh)"
  fi
  for p in "$PULSAR_PORT" "$PULSAR_WEB_PORT" "$bk"; do
    if port_open "$p"; then
      die "port $p is taken by another process (pid $(port_owner "$p")); see LI_PULSAR_*PORT"
    fi
  done
  pulsar_resolve
  pulsar_init_java
  pulsar_write_conf
  mkdir -p "$PULSAR_META" "$PULSAR_BK"
  local jopts=(
    -Xms128m "-Xmx$PULSAR_HEAP" "-XX:MaxDirectMemorySize=$PULSAR_DIRECT" -XX:+UseG1GC
    -XX:+ExitOnOutOfMemoryError
    -Djava.net.preferIPv4Stack=true -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.recycler.maxCapacityPerThread=4096 -Djute.maxbuffer=10485760
    --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.util.zip=ALL-UNNAMED
    --add-opens java.base/java.nio=ALL-UNNAMED --add-opens java.base/jdk.internal.misc=ALL-UNNAMED
    --add-opens java.base/sun.net=ALL-UNNAMED --add-opens java.management/sun.management=ALL-UNNAMED
    -Dbookkeeper.metadata.bookie.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataBookieDriver
    -Dbookkeeper.metadata.client.drivers=org.apache.pulsar.metadata.bookkeeper.PulsarMetadataClientDriver
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.is.webapp=false
    "-Dlog4j2.configurationFile=$PULSAR_SRC/log4j2.xml" "-Dli.pulsar.log=$PULSAR_LOG"
    -Dpulsar.allocator.exit_on_oom=true
  )
  local args=(
    --config "$PULSAR_CONF" --no-functions-worker --no-stream-storage
    --metadata-dir "$PULSAR_META" --bookkeeper-dir "$PULSAR_BK"
    --bookkeeper-port "$PULSAR_BOOKIE_PORT" --advertised-address 127.0.0.1
  )
  PULSAR_LOG_OFF="$(file_size "$PULSAR_LOG")"
  PULSAR_OUT_OFF="$(file_size "$PULSAR_OUT")"
  say "pulsar: starting Apache Pulsar $PULSAR_VERSION standalone (broker :$PULSAR_PORT, web :$PULSAR_WEB_PORT, bookie :$bk)"
  {
    printf '\n==== %s start: %s' "$(date -u +%FT%TZ)" "$JAVA"
    printf ' %q' "${jopts[@]}" -cp "$PULSAR_LIB/*" org.apache.pulsar.PulsarStandaloneStarter "${args[@]}"
    printf '\n'
  } >>"$PULSAR_OUT"
  # Own session (survives the caller's process group being killed), cwd in the state dir
  # (relative defaults land there), no tty, output to a file. The subshell is not a
  # process-group leader (no job control here), so setsid execs java in place and $! is java's pid.
  (
    cd "$PULSAR_DIR"
    exec 9>&- # the lock stays with this script
    exec setsid "$JAVA" "${jopts[@]}" -cp "$PULSAR_LIB/*" org.apache.pulsar.PulsarStandaloneStarter "${args[@]}" \
      </dev/null >>"$PULSAR_OUT" 2>&1
  ) &
  pid=$!
  echo "$pid" >"$PULSAR_PID"
  pulsar_wait_ready "$pid"
}

# offsets of the log files at the last start: on failure show only what that start wrote
PULSAR_LOG_OFF=0
PULSAR_OUT_OFF=0
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

tail_since() { # file offset lines
  local off="$2"
  [ -f "$1" ] || return 0
  [ "$(file_size "$1")" -ge "$off" ] || off=0 # rolled over
  tail -c +"$((off + 1))" "$1" | tail -n "$3" >&2
}

pulsar_fail_logs() {
  say "---- $PULSAR_LOG (last lines) ----"
  tail_since "$PULSAR_LOG" "$PULSAR_LOG_OFF" 40
  say "---- $PULSAR_OUT (last lines) ----"
  tail_since "$PULSAR_OUT" "$PULSAR_OUT_OFF" 15
}

pulsar_wait_ready() {
  local pid="$1" start=$SECONDS
  while ((SECONDS - start < READY_TIMEOUT)); do
    if pulsar_ready; then
      say "pulsar: ready after $((SECONDS - start))s ($PULSAR_URL, admin $PULSAR_ADMIN_URL)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      pulsar_fail_logs
      rm -f "$PULSAR_PID"
      die "pulsar exited during startup (logs: $PULSAR_LOG, $PULSAR_OUT)"
    fi
    sleep 1
  done
  pulsar_fail_logs
  die "pulsar not ready after ${READY_TIMEOUT}s (pid $pid still running; logs: $PULSAR_LOG)"
}

pulsar_wait_gone() { # pid, seconds
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.25
  done
  return 1
}

pulsar_stop() {
  local pid
  if ! pid="$(pulsar_pid)"; then
    say "pulsar: not running"
    rm -f "$PULSAR_PID"
    return 0
  fi
  say "pulsar: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! pulsar_wait_gone "$pid" 60; then
    say "pulsar: still running after 60s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    pulsar_wait_gone "$pid" 10 || die "pulsar (pid $pid) does not die"
  fi
  rm -f "$PULSAR_PID"
}

pulsar_kill() {
  local pid
  if ! pid="$(pulsar_pid)"; then
    say "pulsar: not running"
    rm -f "$PULSAR_PID"
    return 0
  fi
  say "pulsar: kill -9 (pid $pid)"
  kill -KILL "$pid" 2>/dev/null || true
  pulsar_wait_gone "$pid" 10 || die "pulsar (pid $pid) does not die"
  rm -f "$PULSAR_PID"
}

pulsar_status() {
  local pid rss bk
  bk="$(pulsar_bookie_port)"
  if ! pid="$(pulsar_pid)"; then
    echo "pulsar:   stopped (data: $PULSAR_DIR/data)"
    return 1
  fi
  rss="$(awk '/^VmRSS/ {printf "%d MB", $2/1024}' "/proc/$pid/status" 2>/dev/null)"
  if pulsar_ready; then
    echo "pulsar:   running  pid $pid  ports $PULSAR_PORT/$PULSAR_WEB_PORT/$bk  ready    $PULSAR_URL $PULSAR_ADMIN_URL  (Pulsar $PULSAR_VERSION, RSS $rss)"
  else
    echo "pulsar:   running  pid $pid  ports $PULSAR_PORT/$PULSAR_WEB_PORT/$bk  NOT READY (log: $PULSAR_LOG)"
    return 1
  fi
}

# ---------------------------------------------------------------- commands

print_env() {
  printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
  printf 'export PULSAR_URL=%q\n' "$PULSAR_URL"
  printf 'export PULSAR_ADMIN_URL=%q\n' "$PULSAR_ADMIN_URL"
}

cmd_up() {
  local fresh=0 a
  for a in "$@"; do
    case "$a" in
      --fresh) fresh=1 ;;
      *) die "unknown option for up: $a" ;;
    esac
  done
  ensure_packages
  mkdir -p "$STATE_DIR/logs"
  if [ "$fresh" -eq 1 ]; then
    pulsar_stop
    pg_stop
    say "--fresh: wiping $PG_DIR, $PULSAR_DIR and $STATE_DIR/logs"
    rm -rf "$PG_DIR" "$PULSAR_DIR" "$STATE_DIR/logs"
    mkdir -p "$STATE_DIR/logs"
  fi
  pg_start
  pulsar_start
  echo "DATABASE_URL=$DATABASE_URL"
  echo "PULSAR_URL=$PULSAR_URL"
  echo "PULSAR_ADMIN_URL=$PULSAR_ADMIN_URL"
}

cmd_down() {
  pulsar_stop
  pg_stop
}

cmd_status() {
  local rc=0
  pg_status || rc=3
  pulsar_status || rc=3
  echo "state: $STATE_DIR  jar cache: $CACHE_DIR"
  return "$rc"
}

usage() {
  sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# Serialise commands that start or stop something (parallel test runs may call `up` at once).
take_lock() {
  mkdir -p "$STATE_DIR" || die "cannot create $STATE_DIR"
  exec 9>>"$STATE_DIR/.lock"
  flock -w 900 9 || die "another services.sh holds $STATE_DIR/.lock"
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up | down | pg | postgres | pulsar) take_lock ;;
  esac
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    pg | postgres)
      case "${1:-}" in
        start) pg_start ;;
        stop) pg_stop ;;
        restart) pg_stop && pg_start ;;
        *) usage ;;
      esac
      ;;
    pulsar)
      case "${1:-}" in
        start) pulsar_start ;;
        stop) pulsar_stop ;;
        restart) pulsar_stop && pulsar_start ;;
        kill) pulsar_kill ;;
        *) usage ;;
      esac
      ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
