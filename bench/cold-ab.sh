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
#     and the cache entries at the end. A build that writes the cache's snapshot at shutdown
#     (`cache_snapshot`, on by default) loads it here; a snapshot copied with the seeded store is
#     removed first, so the first start always warms from the store.
# With STOP=kill the restart follows a crash instead of SIGTERM: KILL_AFTER seconds (default 6)
# after the warm load, the server is killed with SIGKILL. Set KEYWARD_CACHE_SNAPSHOT_EVERY (e.g.
# 5s) so that a build writing the snapshot while it runs has written one by then.
# Binds 127.0.0.1 only.
set -euo pipefail
ROUNDS="${ROUNDS:-2}"
STOP="${STOP:-term}"
KILL_AFTER="${KILL_AFTER:-6}"
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

# start_kw NAME BIN ADDR : start_server, then waits for /readyz; READY_MS counts from the start.
start_kw() {
  local t0
  t0=$(date +%s%N)
  start_server "$1" "$2" --data-dir "$DATA" serve --listen "$3"
  PID="$LAST_PID"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" = 200 ]; do
    kill -0 "$PID" 2>/dev/null || { echo "keyward exited; its log:" >&2; cat "$WORK/$1.err" >&2; exit 1; }
    sleep 0.01
  done
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
random_load() { # URL SECONDS
  SECRETS="$SECRETS_FILE" SCOPES='["droplet:read"]' RANDOM=1 wrk -t"$THREADS" -c"$CONN" -d"$2" \
    -s "$ROOT/bench/lua/verify.lua" "$1/v1/verify"
}

run() { # LABEL BIN
  local label="$1" bin="$2" url first_ready took warm_rps saved cold_ready line last now wrk_pid
  rm -rf "$DATA"
  cp -r "$SEEDS/data-$N" "$DATA"
  rm -f "$DATA/keyward.db-cache"
  start_kw "$label" "$bin" 127.0.0.1:0
  url="$URL"
  first_ready="$READY_MS"
  until [ "$(metric "$url" keyward_cache_entries)" -ge "$N" ] 2>/dev/null; do sleep 0.2; done
  took="$(grep -o 'took_ms=[0-9]*' "$WORK/$label.err" | tail -1)"
  warm_rps="$(random_load "$url" 8s | awk '/Requests\/sec/ { printf "%d", $2 }')"
  if [ "$STOP" = kill ]; then
    sleep "$KILL_AFTER"
    kill -9 "$PID"
    wait "$PID" 2>/dev/null || true
  else
    stop_pid "$PID"
  fi
  # The last snapshot written before the stop (periodic, or the shutdown's), and how long it took.
  saved="$(grep "wrote the verification cache's snapshot" "$WORK/$label.err" | tail -1 |
    grep -o 'when="[a-z]*".*took_ms=[0-9]*' | sed 's/when="\([a-z]*\)".*took_ms=\([0-9]*\)/\1 \2/')" || true
  # Restarted on the same port, as a deployment restarts.
  start_kw "$label-cold" "$bin" "${url#http://}"
  cold_ready="$READY_MS"
  random_load "$url" 13s >/dev/null 2>&1 &
  wrk_pid=$!
  PIDS+=("$wrk_pid")
  last="$(metric_sum "$url" keyward_verifications_total)"
  line=""
  for _ in $(seq 12); do
    sleep 1
    now="$(metric_sum "$url" keyward_verifications_total)"
    line="$line $(( (now - last) / 1000 ))k"
    last="$now"
  done
  wait "$wrk_pid" 2>/dev/null || true
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$first_ready" "${took#took_ms=}" "$warm_rps" \
    "${saved:--}" "$cold_ready" "$line" "$(metric "$url" keyward_cache_entries)"
  stop_pid "$PID"
}

log "machine: $(machine_line)"
echo "| build | ready, no load (ms) | warm-up alone (ms) | warm verify (req/s) | last snapshot before the stop (when, ms) | ready, restarted (ms) | verifications in seconds 1..12 under load | cache entries at 12 s |"
echo "|---|---:|---:|---:|---|---:|---|---:|"
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    if [ "$side" = old ]; then bin="$1"; else bin="$2"; fi
    log "round $round: $side ($bin)"
    run "$side" "$bin"
  done
done
