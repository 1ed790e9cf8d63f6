#!/usr/bin/env bash
# keyward at scale on SQLite (issue 15): verification from 10^3 to 10^7 tokens, memory per cached
# token, a flood of forged tokens, cold start, and creation under concurrency. Every figure
# prints beside its reference measured in the same run.
#
#   bench/scale.sh                           # SIZES="1000 100000 1000000", PARTS="sizes creation"
#   SIZES="1000 10000000" bench/scale.sh     # 10^7: about 6 GiB of memory and 30 minutes
#   PARTS=creation bench/scale.sh            # only the creation figures
#   SEEDS=/var/tmp/seeds bench/scale.sh      # keep the seeded stores there, and reuse them
#
# sizes: for each N of SIZES, a fresh SQLite data dir is seeded in one transaction by the `seed`
#   tool (bench/tools; 10 tokens per user, scopes `droplet:read volume:*`; 10^7 takes ~20 minutes
#   and ~20 GiB, so with SEEDS set the store, its secrets and its server key are kept in
#   $SEEDS/N and used again by later runs, as they were left) and `keyward serve`
#   starts with a cache of 2 N; the cache fills (its start-up warming, and one wrk sweep that
#   visits every secret once) until it holds all N secrets. Then:
#   - POST /v1/verify over all N secrets at -c$CONN (throughput) and -c1 (latency of one request
#     at a time); the last size's latency is compared with the first's (target <= 1.5x);
#   - memory: RSS with every secret cached, the known-hash set loaded and the sweep's uses
#     written (keyward_uses_unwritten at 0), minus the RSS of the same server over an empty
#     data dir, divided by N (target <= 160 B);
#   - the forged flood: every other request carries one of $FORGED well-formed tokens that were
#     never issued; req/s beside hello (target >= 0.7x), and store reads per forged request
#     (keyward_store_lookups_total; target <= 1 %);
#   - cold start, at N = $COLD (default 10^6; skipped when SIZES lacks it): the server is stopped
#     (SIGTERM: the uses of the sweep are written, so the most recently used are known) and
#     started again on the same port; reported: the time until /readyz answers 200, the first
#     verify's latency (curl), then the verifications answered in each of the next 10 seconds
#     (keyward_verifications_total, sampled each second) under the same wrk load, but each request
#     a secret at random (RANDOM=1: a walk from the list's start would follow the warm-up's own
#     order), beside the warm figure (target: 80 % within 10 s).
# creation: a fresh data dir, one admin token; wrk POSTs /v1/tokens with one connection, then
#   with 32 (target: 32 creators >= 4x the creations per second of one, their p99 <= 10x one
#   creator's p50).
# The bare axum hello GET runs before and after; the reference is their mean. Binds 127.0.0.1.
set -euo pipefail
SIZES="${SIZES:-1000 100000 1000000}"
PARTS="${PARTS:-sizes creation}"
COLD="${COLD:-1000000}"
FORGED="${FORGED:-100000}"
DUR="${DUR:-5s}"
RUNS="${RUNS:-1}"
CONN="${CONN:-32}"
THREADS="${THREADS:-2}"
WARM="${WARM:-1s}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FORGE="$TARGET_DIR/release/forge"

ensure_wrk
build_release
: >"$WORK/results"
if [ -n "${SEEDS:-}" ]; then
  mkdir -p -m 700 "$SEEDS"
  [ -s "$SEEDS/key" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$SEEDS/key"
  KEYWARD_SERVER_KEY="$(cat "$SEEDS/key")"
  export KEYWARD_SERVER_KEY
else
  new_server_key
fi
export KEYWARD_LOG=warn
log "machine: $(machine_line)"
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# fill_cache URL SECRETS N : until the cache holds N secrets: the server's own warming, and a wrk
# sweep visiting every secret once (stopped as soon as the cache is full).
fill_cache() {
  local url="$1" secrets="$2" n="$3"
  SECRETS="$secrets" SWEEP="$THREADS" wrk -t"$THREADS" -c"$CONN" -d3600s \
    -s "$ROOT/bench/lua/verify.lua" "$url/v1/verify" >/dev/null 2>&1 &
  local sweep_pid=$!
  PIDS+=("$sweep_pid")
  until [ "$(metric "$url" keyward_cache_entries)" -ge "$n" ] 2>/dev/null; do
    kill -0 "$sweep_pid" 2>/dev/null || break
    sleep 0.5
  done
  stop_pid "$sweep_pid"
  [ "$(metric "$url" keyward_cache_entries)" -ge "$n" ] || { echo "the cache holds $(metric "$url" keyward_cache_entries) of $n secrets after a sweep" >&2; exit 1; }
}

start_server hello "$HELLO" 127.0.0.1:0
HELLO_URL="$URL"
run_wrk hello_before "$HELLO_URL/hello"

if part sizes; then
  "$FORGE" "$FORGED" "$WORK/forged" >&2
  # The memory reference: the same server over an empty data dir.
  mkdir -m 700 "$WORK/empty"
  start_server empty "$KW" --data-dir "$WORK/empty" serve --listen 127.0.0.1:0
  curl -s -o /dev/null "$URL/readyz"
  sleep 2
  RSS_EMPTY="$(rss_kib "$LAST_PID")"
  stop_pid "$LAST_PID"
  : >"$WORK/scale"
  for n in $SIZES; do
    data="${SEEDS:-$WORK}/data-$n"
    secrets="${SEEDS:-$WORK}/secrets-$n"
    if [ -s "$secrets" ] && [ -s "$data/keyward.db" ]; then
      log "using the $n tokens seeded in $data"
    else
      rm -rf "$data"
      mkdir -m 700 "$data"
      log "seeding $n tokens"
      "$SEED" "$data/keyward.db" "$n" "$secrets" >&2
    fi
    db_bytes=$(( $(stat -c %s "$data/keyward.db") + $(stat -c %s "$data/keyward.db-wal" 2>/dev/null || echo 0) ))
    KEYWARD_CACHE_CAPACITY=$((n * 2)) start_server "kw-$n" "$KW" --data-dir "$data" serve --listen 127.0.0.1:0
    pid="$LAST_PID"
    kw_url="$URL"
    log "filling the cache with $n secrets"
    fill_cache "$kw_url" "$secrets" "$n"
    # The set counts distinct fingerprints: two tokens may share one (rarely), so allow a few.
    until [ "$(metric "$kw_url" keyward_known_hashes)" -ge $(( n - n / 100000 )) ] 2>/dev/null; do sleep 0.2; done
    # Until the sweep's uses are written (it notes every token it visits, faster than they can
    # be written over millions of tokens), then past one more flush: what is measured is what
    # stays, not a backlog that drains.
    for _ in $(seq 600); do
      [ "$(metric "$kw_url" keyward_uses_unwritten)" = 0 ] && break
      sleep 1
    done
    log "uses still unwritten: $(metric "$kw_url" keyward_uses_unwritten)"
    sleep 6
    rss_full="$(rss_kib "$pid")"
    SECRETS="$secrets" SCOPES='["droplet:read"]' \
      run_wrk "verify-$n" "$kw_url/v1/verify" -s "$ROOT/bench/lua/verify.lua"
    SECRETS="$secrets" SCOPES='["droplet:read"]' CONN=1 THREADS=1 \
      run_wrk "verify1-$n" "$kw_url/v1/verify" -s "$ROOT/bench/lua/verify.lua"
    lookups_before="$(metric "$kw_url" keyward_store_lookups_total)"
    ruled_before="$(metric "$kw_url" keyward_unknown_tokens_ruled_out_total)"
    SECRETS="$secrets" FORGED="$WORK/forged" SCOPES='["droplet:read"]' \
      run_wrk "flood-$n" "$kw_url/v1/verify" -s "$ROOT/bench/lua/verify.lua"
    for r in "verify-$n" "verify1-$n" "flood-$n"; do
      [ "$(field "$r" 5)" = 0 ] && [ "$(field "$r" 6)" = 0 ] || { echo "$r: $(field "$r" 5) non-2xx answers, $(field "$r" 6) socket errors" >&2; exit 1; }
    done
    log "verifications answered so far, by result: $(curl -s "$kw_url/metrics" | grep '^keyward_verifications_total' | tr '\n' ' ')"
    lookups=$(( $(metric "$kw_url" keyward_store_lookups_total) - lookups_before ))
    ruled=$(( $(metric "$kw_url" keyward_unknown_tokens_ruled_out_total) - ruled_before ))
    printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$rss_full" "$db_bytes" "$lookups" "$ruled" >>"$WORK/scale"

    if [ "$n" = "$COLD" ]; then
      log "cold start over $n tokens"
      port="${kw_url##*:}"
      stop_pid "$pid"
      t0=$(date +%s%N)
      # The same cache as the warm run, so the warm-up can hold every secret it held.
      KEYWARD_CACHE_CAPACITY=$((n * 2)) start_server "cold-$n" "$KW" --data-dir "$data" serve --listen "127.0.0.1:$port"
      pid="$LAST_PID"
      until [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz")" = 200 ]; do sleep 0.01; done
      ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
      first="$(head -1 "$secrets")"
      first_us="$(curl -s -o /dev/null -w '%{time_total}' "$URL/v1/verify" -H 'Content-Type: application/json' \
        -d "{\"token\":\"$first\",\"scopes\":[\"droplet:read\"]}" | awk '{ printf "%.0f", $1 * 1000000 }')"
      SECRETS="$secrets" SCOPES='["droplet:read"]' RANDOM=1 wrk -t"$THREADS" -c"$CONN" -d12s \
        -s "$ROOT/bench/lua/verify.lua" "$URL/v1/verify" >/dev/null 2>&1 &
      wrk_pid=$!
      PIDS+=("$wrk_pid")
      : >"$WORK/cold-seconds"
      last="$(metric_sum "$URL" keyward_verifications_total)"
      for s in $(seq 10); do
        sleep 1
        now="$(metric_sum "$URL" keyward_verifications_total)"
        printf '%s\t%s\t%s\n' "$s" "$((now - last))" "$(metric "$URL" keyward_cache_entries)" >>"$WORK/cold-seconds"
        last="$now"
      done
      stop_pid "$wrk_pid"
      printf '%s\t%s\t%s\n' "$n" "$ready_ms" "$first_us" >"$WORK/cold"
    fi
    stop_pid "$pid"
    [ -n "${SEEDS:-}" ] || rm -rf "$data"
  done
fi

if part creation; then
  data="$WORK/data-creation"
  "$KW" --data-dir "$data" user add bench >/dev/null
  admin="$("$KW" --data-dir "$data" token create --user bench --name scale-admin \
    --scope 'tokens:*' --scope droplet:read --expires 30d 2>/dev/null)"
  start_server creation "$KW" --data-dir "$data" serve --listen 127.0.0.1:0
  BODY='{"name":"wrk","scopes":["droplet:read"],"expires":"30d"}' BEARER="$admin" CONN=1 THREADS=1 \
    run_wrk create1 "$URL/v1/tokens" -s "$ROOT/bench/lua/post.lua"
  BODY='{"name":"wrk","scopes":["droplet:read"],"expires":"30d"}' BEARER="$admin" CONN=32 \
    run_wrk create32 "$URL/v1/tokens" -s "$ROOT/bench/lua/post.lua"
  for r in create1 create32; do
    [ "$(field "$r" 5)" = 0 ] && [ "$(field "$r" 6)" = 0 ] || { echo "$r: $(field "$r" 5) non-2xx answers, $(field "$r" 6) socket errors" >&2; exit 1; }
  done
  stop_pid "$LAST_PID"
fi

run_wrk hello_after "$HELLO_URL/hello"
HELLO_RPS="$(awk -v a="$(field hello_before 2)" -v b="$(field hello_after 2)" 'BEGIN { printf "%.0f", (a + b) / 2 }')"

echo
echo "## keyward scale benchmark ($(date -Is))"
echo
echo "machine: $(machine_line)"
echo "wrk -t$THREADS -c$CONN -d$DUR (and -t1 -c1), $RUNS run(s) each after a $WARM warm-up; bare axum hello GET: $(field hello_before 2) req/s before, $(field hello_after 2) after, reference $HELLO_RPS req/s"
if part sizes; then
  echo
  echo "| tokens | verify req/s (-c$CONN) | ÷ hello | p50 / p99 µs | p50 / p99 µs at -c1 | RSS per cached token (target ≤ 160 B) | DB bytes per token | half forged: req/s | ÷ hello (target ≥ 0.7) | store reads per forged request (target ≤ 1 %) |"
  echo "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"
  while IFS=$'\t' read -r n full db lookups ruled; do
    awk -v n="$n" -v r="$(field "verify-$n" 2)" -v h="$HELLO_RPS" -v p50="$(field "verify-$n" 3)" \
      -v p99="$(field "verify-$n" 4)" -v q50="$(field "verify1-$n" 3)" -v q99="$(field "verify1-$n" 4)" \
      -v e="$RSS_EMPTY" -v f="$full" -v db="$db" -v fl="$(field "flood-$n" 2)" -v lk="$lookups" -v ro="$ruled" 'BEGIN {
        printf "| %d | %.0f | %.2f× | %d / %d | %d / %d | %.0f B | %.0f B | %.0f | %.2f× | %.3f %% |\n",
          n, r, r / h, p50, p99, q50, q99, (f - e) * 1024 / n, db / n, fl, fl / h, (lk + ro ? 100 * lk / (lk + ro) : 0) }'
  done <"$WORK/scale"
  first="$(head -1 "$WORK/scale" | cut -f1)"; last="$(tail -1 "$WORK/scale" | cut -f1)"
  awk -v a="$(field "verify1-$last" 3)" -v b="$(field "verify1-$first" 3)" -v n1="$last" -v n0="$first" 'BEGIN {
    printf "\nverify p50 at -c1, %d tokens ÷ %d tokens: %.2f× (target ≤ 1.5×)\n", n1, n0, a / b }'
  echo "RSS of the server over an empty data dir (the memory reference): $(awk -v e="$RSS_EMPTY" 'BEGIN { printf "%.1f MiB", e / 1024 }')"
  if [ -s "$WORK/cold" ]; then
    IFS=$'\t' read -r n ready first_us <"$WORK/cold"
    warm="$(field "verify-$n" 2)"
    echo
    echo "cold start over $n tokens: /readyz 200 after $ready ms (process start included); first verify $first_us µs; warm verify (above) $warm req/s"
    echo
    echo "| second after ready | verifications | ÷ warm (target ≥ 0.8 within 10 s) | cache entries |"
    echo "|---:|---:|---:|---:|"
    awk -F'\t' -v w="$warm" '{ printf "| %d | %d | %.2f× | %d |\n", $1, $2, $2 / w, $3 }' "$WORK/cold-seconds"
  fi
fi
if part creation; then
  echo
  awk -v a="$(field create1 2)" -v b="$(field create32 2)" -v p50="$(field create1 3)" -v p99="$(field create32 4)" \
    -v q99="$(field create1 4)" -v m50="$(field create32 3)" 'BEGIN {
    printf "creation, POST /v1/tokens: 1 creator %.0f/s (p50 %d µs, p99 %d µs), 32 creators %.0f/s (p50 %d µs, p99 %d µs): %.2f× the rate (target ≥ 4×), p99 ÷ one creator'"'"'s p50 %.1f× (target ≤ 10×)\n",
      a, p50, q99, b, m50, p99, b / a, p99 / p50 }'
fi
log "done"
