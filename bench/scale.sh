#!/usr/bin/env bash
# keyward at 10^3, 10^5 and 10^6 tokens: verify throughput and latency, resident memory per
# cached token, database bytes per token.
#
#   bench/scale.sh            # SIZES="1000 100000 1000000" by default
#
# For each size: a fresh SQLite data dir is seeded in one transaction by the `seed` tool
# (bench/tools: Store::restore, not one call per token), `keyward serve` starts with a cache big
# enough for every token, one wrk sweep visits every secret once (warming the cache: the sweep
# stops when keyward's miss counter reaches N), then wrk measures POST /v1/verify over all N
# secrets at -c$CONN (throughput, latency under load) and at -c1 (latency of one request at a
# time). RSS is read from /proc before and after the warm-up. Tokens: 10 per user, scopes
# `droplet:read volume:*`. Binds 127.0.0.1 only.
set -euo pipefail
SIZES="${SIZES:-1000 100000 1000000}"
DUR="${DUR:-5s}"
RUNS="${RUNS:-1}"
CONN="${CONN:-32}"
THREADS="${THREADS:-2}"
WARM="${WARM:-1s}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_wrk
build_release
: >"$WORK/results"
new_server_key
export KEYWARD_LOG=warn
log "machine: $(machine_line)"

start_server hello "$HELLO" 127.0.0.1:0
run_wrk hello "$URL/hello"
stop_pid "$LAST_PID"

: >"$WORK/scale"
for n in $SIZES; do
  data="$WORK/data-$n"
  mkdir -m 700 "$data"
  log "seeding $n tokens"
  "$SEED" "$data/keyward.db" "$n" "$WORK/secrets-$n" >&2
  db_bytes=$(( $(stat -c %s "$data/keyward.db") + $(stat -c %s "$data/keyward.db-wal" 2>/dev/null || echo 0) ))
  KEYWARD_CACHE_CAPACITY=$((n * 2)) start_server "kw-$n" "$KW" --data-dir "$data" serve --listen 127.0.0.1:0
  pid="$LAST_PID"
  curl -s -o /dev/null "$URL/healthz"
  rss_before="$(rss_kib "$pid")"
  log "warming the cache: one sweep over $n secrets"
  warm_cache "$URL" "$WORK/secrets-$n" "$n"
  rss_after="$(rss_kib "$pid")"
  SECRETS="$WORK/secrets-$n" SCOPES='["droplet:read"]' \
    run_wrk "verify-$n" "$URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"
  SECRETS="$WORK/secrets-$n" SCOPES='["droplet:read"]' CONN=1 THREADS=1 \
    run_wrk "verify1-$n" "$URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"
  misses_end="$(metric "$URL" keyward_cache_misses_total)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$rss_before" "$rss_after" "$db_bytes" "$misses_end" >>"$WORK/scale"
  stop_pid "$pid"
  rm -rf "$data"
done

echo
echo "## keyward scale benchmark ($(date -Is))"
echo
echo "machine: $(machine_line)"
echo "wrk -t$THREADS -c$CONN -d$DUR (and -t1 -c1), $RUNS run(s) each after a $WARM warm-up; bare axum hello GET in this run: $(field hello 2) req/s"
echo
echo "| tokens | verify req/s (-c$CONN) | ratio to hello | p50 µs | p99 µs | p50 µs at -c1 | p99 µs at -c1 | RSS before → after warm-up | RSS per cached token | DB bytes per token | cache misses after warm-up |"
echo "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
while IFS=$'\t' read -r n before after db miss; do
  awk -v n="$n" -v r="$(field "verify-$n" 2)" -v h="$(field hello 2)" -v p50="$(field "verify-$n" 3)" \
    -v p99="$(field "verify-$n" 4)" -v q50="$(field "verify1-$n" 3)" -v q99="$(field "verify1-$n" 4)" \
    -v b="$before" -v a="$after" -v db="$db" -v m="$miss" 'BEGIN {
      printf "| %d | %.0f | %.2fx | %d | %d | %d | %d | %.1f → %.1f MiB | %.0f B | %.0f B | %d |\n",
        n, r, r / h, p50, p99, q50, q99, b / 1024, a / 1024, (a - b) * 1024 / n, db / n, m - n }'
done <"$WORK/scale"
first="$(head -1 "$WORK/scale" | cut -f1)"; last="$(tail -1 "$WORK/scale" | cut -f1)"
awk -v a="$(field "verify1-$last" 3)" -v b="$(field "verify1-$first" 3)" -v r1="$(field "verify-$last" 2)" -v r0="$(field "verify-$first" 2)" \
  -v n1="$last" -v n0="$first" 'BEGIN {
    printf "\nverify p50 at -c1, %d / %d tokens: %.2fx (target <= 1.5x); req/s %d / %d tokens: %.2fx\n", n1, n0, a / b, n1, n0, r1 / r0 }'
log "done"
