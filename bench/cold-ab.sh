#!/usr/bin/env bash
# Start-up and cold start of two keyward builds over the same seeded store, alternating, so a
# change to the start-up or the miss path is measured beside what it replaces in one run.
#
#   SEEDS=/var/tmp/seeds bench/cold-ab.sh OLD_KEYWARD NEW_KEYWARD
#
# SEEDS holds a store seeded by bench/scale.sh (or the `seed` tool) under its key:
# $SEEDS/key, $SEEDS/data-$N/keyward.db and $SEEDS/secrets-$N (N=1000000 by default). Each run
# works on a fresh copy of that store (every build starts from the same file) with a cache of
# 2 N, ROUNDS times per build, alternating:
#   - start-up with no traffic: time until /readyz answers 200 (process start included), and the
#     start-up warm-up's own `took_ms` from the log;
#   - warm: once the warm-up holds all N secrets, wrk POSTs /v1/verify for 8 s, each request a
#     secret at random (RANDOM=1);
#   - cold: SIGTERM, the same build started again on the same port, /readyz, then the same load;
#     the verifications answered in each of the next 12 seconds (keyward_verifications_total)
#     and the cache entries at the end.
# Binds 127.0.0.1 only.
set -euo pipefail
ROUNDS="${ROUNDS:-2}"
N="${N:-1000000}"
THREADS="${THREADS:-2}"
CONN="${CONN:-32}"
[ $# -eq 2 ] || { echo "usage: SEEDS=DIR $0 OLD_KEYWARD NEW_KEYWARD" >&2; exit 2; }
: "${SEEDS:?SEEDS must name the directory of a seeded store (see bench/scale.sh)}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_wrk
[ -s "$SEEDS/key" ] && [ -s "$SEEDS/data-$N/keyward.db" ] && [ -s "$SEEDS/secrets-$N" ] ||
  { echo "no store of $N tokens seeded in $SEEDS" >&2; exit 1; }
KEYWARD_SERVER_KEY="$(cat "$SEEDS/key")"
export KEYWARD_SERVER_KEY KEYWARD_LOG=info KEYWARD_CACHE_CAPACITY=$((N * 2))
SECRETS_FILE="$SEEDS/secrets-$N"
DATA="$WORK/data"

verifications() {
  curl -s "$1/metrics" | awk 'index($1, "keyward_verifications_total") == 1 { s += $2 } END { printf "%.0f\n", s }'
}
# start_kw BIN PORT LOG : sets PID; waits for /readyz and sets READY_MS.
start_kw() {
  local t0
  t0=$(date +%s%N)
  "$1" --data-dir "$DATA" serve --listen "127.0.0.1:$2" >"$3" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/readyz")" = 200 ]; do
    kill -0 "$PID" 2>/dev/null || { echo "keyward exited; its log:" >&2; cat "$3" >&2; exit 1; }
    sleep 0.01
  done
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
random_load() { # URL SECONDS
  SECRETS="$SECRETS_FILE" SCOPES='["droplet:read"]' RANDOM=1 wrk -t"$THREADS" -c"$CONN" -d"$2" \
    -s "$ROOT/bench/lua/verify.lua" "$1/v1/verify"
}

run() { # LABEL BIN
  local label="$1" bin="$2" port url warm_rps cold_ready line last now s
  rm -rf "$DATA"
  cp -r "$SEEDS/data-$N" "$DATA"
  port=$((20000 + RANDOM % 20000))
  url="http://127.0.0.1:$port"
  start_kw "$bin" "$port" "$WORK/$label.log"
  local first_ready="$READY_MS"
  until [ "$(metric "$url" keyward_cache_entries)" -ge "$N" ] 2>/dev/null; do sleep 0.2; done
  local took
  took="$(grep -o 'took_ms=[0-9]*' "$WORK/$label.log" | tail -1)"
  warm_rps="$(random_load "$url" 8s | awk '/Requests\/sec/ { printf "%d", $2 }')"
  stop_pid "$PID"
  start_kw "$bin" "$port" "$WORK/$label-cold.log"
  cold_ready="$READY_MS"
  random_load "$url" 13s >/dev/null 2>&1 &
  local wrk_pid=$!
  PIDS+=("$wrk_pid")
  last="$(verifications "$url")"
  line=""
  for s in $(seq 12); do
    sleep 1
    now="$(verifications "$url")"
    line="$line $(( (now - last) / 1000 ))k"
    last="$now"
  done
  wait "$wrk_pid" 2>/dev/null || true
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$first_ready" "${took#took_ms=}" "$warm_rps" \
    "$cold_ready" "$line" "$(metric "$url" keyward_cache_entries)"
  stop_pid "$PID"
}

log "machine: $(machine_line)"
echo "| build | ready, no load (ms) | warm-up alone (ms) | warm verify (req/s) | ready, restarted (ms) | verifications in seconds 1..12 under load | cache entries at 12 s |"
echo "|---|---:|---:|---:|---:|---|---:|"
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    if [ "$side" = old ]; then bin="$1"; else bin="$2"; fi
    log "round $round: $side ($bin)"
    run "$side" "$bin"
  done
done
