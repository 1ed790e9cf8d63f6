# Shared by bench/*.sh: process bookkeeping, server start-up, wrk runs. Sourced, not run.
# Expects the caller to have `set -euo pipefail`.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
KW="$TARGET_DIR/release/keyward"
HELLO="$TARGET_DIR/release/hello"
SEED="$TARGET_DIR/release/seed"
PROPAGATE="$TARGET_DIR/release/propagate"
T0=$SECONDS

log() { printf '[%3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyward-bench.XXXXXX")"
PIDS=()
stop_pid() {
  local pid="$1"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    # A clean stop writes the noted uses (seconds after a sweep of a million distinct tokens)
    # and the cache's snapshot: up to a minute before SIGKILL.
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
# Commands run at exit after the servers stop (e.g. dropping a benchmark database).
ON_EXIT=()
cleanup() {
  local p c
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
  for c in "${ON_EXIT[@]}"; do eval "$c" || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    log "apt-get install wrk"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
}

build_release() {
  log "cargo build --release (keyward and the bench tools)"
  (cd "$ROOT" && cargo build --release -q -p keyward -p keyward-bench)
}

# start_server NAME CMD... : starts CMD in the background (stdout to $WORK/NAME.out), waits for
# its `listening on http://ADDR` line and sets $URL. The PID goes to $PIDS and to $LAST_PID.
start_server() {
  local name="$1"; shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  local line=""
  # Up to START_WAIT seconds (default 120): over millions of tokens, a migration runs first.
  for _ in $(seq $(( ${START_WAIT:-120} * 20 ))); do
    line="$(grep -m1 '^listening on ' "$WORK/$name.out" 2>/dev/null || true)"
    [ -n "$line" ] && break
    kill -0 "$LAST_PID" 2>/dev/null || { cat "$WORK/$name.err" >&2; echo "$name exited" >&2; return 1; }
    sleep 0.05
  done
  [ -n "$line" ] || { echo "$name did not start" >&2; return 1; }
  URL="${line#listening on }"
}

# require_postgres : fails unless psql reaches the PostgreSQL at $PGURL.
require_postgres() {
  command -v psql >/dev/null || { echo "psql not found: PostgreSQL is needed for this benchmark" >&2; exit 1; }
  psql "$PGURL/postgres" -qtAc 'SELECT 1' >/dev/null || { echo "PostgreSQL at $PGURL is not reachable" >&2; exit 1; }
}

# fresh_database NAME : creates database NAME at $PGURL, dropped when the script exits.
fresh_database() {
  psql "$PGURL/postgres" -qc "CREATE DATABASE $1" >/dev/null
  ON_EXIT+=("psql '$PGURL/postgres' -qc 'DROP DATABASE IF EXISTS $1 WITH (FORCE)' >/dev/null")
}

# new_server_key : a fresh KEYWARD_SERVER_KEY, exported, for instances that must share one.
new_server_key() {
  KEYWARD_SERVER_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
  export KEYWARD_SERVER_KEY
}

# metric URL NAME : one value from keyward's /metrics.
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }' | head -1; }

# metric_sum URL NAME : the sum of every series of a metric (any labels).
metric_sum() {
  curl -s "$1/metrics" | awk -v m="$2" 'index($1, m) == 1 && (length($1) == length(m) || substr($1, length(m) + 1, 1) == "{") { s += $2 } END { printf "%.0f\n", s }'
}

# warm_cache URL SECRETS N : one wrk sweep visits every secret of SECRETS once (each a cold read),
# stopped when keyward's miss counter reaches N, so every secret is then cached.
warm_cache() {
  local url="$1" secrets="$2" n="$3"
  SECRETS="$secrets" SWEEP="$THREADS" wrk -t"$THREADS" -c"$CONN" -d600s \
    -s "$ROOT/bench/lua/verify.lua" "$url/v1/verify" >/dev/null 2>&1 &
  local sweep_pid=$!
  PIDS+=("$sweep_pid")
  until [ "$(metric "$url" keyward_cache_misses_total)" -ge "$n" ] 2>/dev/null; do
    kill -0 "$sweep_pid" 2>/dev/null || { echo "warm-up sweep ended early" >&2; exit 1; }
    sleep 0.2
  done
  stop_pid "$sweep_pid"
}

# rss_kib PID
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# run_wrk NAME URL [wrk args...] : runs wrk RUNS times after a warm-up, keeps the median req/s
# run with its latency, and appends `NAME req_s p50_us p99_us non2xx errors` to $WORK/results.
run_wrk() {
  local name="$1" url="$2"; shift 2
  wrk -t"$THREADS" -c"$CONN" -d"$WARM" "$@" "$url" >/dev/null 2>&1 || true
  local i
  for i in $(seq "$RUNS"); do
    log "wrk $name run $i/$RUNS"
    wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency "$@" "$url" >"$WORK/wrk.$name.$i.txt" 2>&1
  done
  local f
  for f in "$WORK"/wrk."$name".*.txt; do
    awk -v name="$name" '
      function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }
      /Requests\/sec:/ { rps = $2 }
      /^ +50%/ { p50 = us($2) }
      /^ +99%/ { p99 = us($2) }
      /Non-2xx or 3xx responses:/ { non2xx = $5 }
      /Socket errors:/ { errs = $4 + $6 + $8 + $10 }
      END { printf "%s\t%s\t%.0f\t%.0f\t%d\t%d\n", name, rps, p50, p99, non2xx, errs }
    ' "$f"
  done | sort -t$'\t' -k2,2g | awk -v n="$RUNS" 'NR == int((n + 1) / 2)' >>"$WORK/results"
}

# field NAME COLUMN : a column of a result row (2 req/s, 3 p50 µs, 4 p99 µs, 5 non-2xx, 6 errors)
field() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$WORK/results"; }

machine_line() {
  printf '%s cores, %s, %s GiB RAM, load average %s\n' "$(nproc)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(free -g | awk '/Mem:/ {print $2}')" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
