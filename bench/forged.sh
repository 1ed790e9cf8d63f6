#!/usr/bin/env bash
# Unknown tokens must cost nothing (issue 10): a flood of distinct, well-formed tokens that were
# never issued, on SQLite and on PostgreSQL.
#
#   bench/forged.sh                 # ENGINES="sqlite postgres", TOKENS=1000000 (SQLite) / 100000 (PostgreSQL)
#
# For each engine: the store is seeded with TOKENS real tokens (`seed`), FORGED (default 100,000)
# well-formed tokens that were never issued are made (`forge`), `keyward serve` starts and loads
# the set of known hashes. Then, in one run: the bare axum hello GET (reference), POST /v1/verify
# over the real tokens (cached after one sweep), and POST /v1/verify over the forged tokens.
# Reported: how many store lookups the forged flood caused per forged request (the target is at
# most 1 %), the flood's throughput beside the references, and the resident memory of the set of
# known hashes per token (RSS of the server over TOKENS tokens, known hashes loaded and cache
# empty, minus that of a server over an empty store, divided by TOKENS). PostgreSQL: a fresh
# database on $PGURL (default postgres://postgres@127.0.0.1:5432), dropped at the end.
set -euo pipefail
ENGINES="${ENGINES:-sqlite postgres}"
FORGED="${FORGED:-100000}"
DUR="${DUR:-5s}"
RUNS="${RUNS:-1}"
CONN="${CONN:-32}"
THREADS="${THREADS:-2}"
WARM="${WARM:-1s}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FORGE="$TARGET_DIR/release/forge"

ensure_wrk
build_release
: >"$WORK/results"
new_server_key
export KEYWARD_LOG=warn
log "machine: $(machine_line)"

"$FORGE" "$FORGED" "$WORK/forged" >&2
start_server hello "$HELLO" 127.0.0.1:0
run_wrk hello "$URL/hello"
stop_pid "$LAST_PID"

: >"$WORK/forged-results"
for engine in $ENGINES; do
  data="$WORK/data-$engine"
  empty="$WORK/empty-$engine"
  mkdir -m 700 "$data" "$empty"
  case "$engine" in
    sqlite)
      n="${TOKENS:-1000000}"
      db="$data/keyward.db"
      db_empty=""
      ;;
    postgres)
      n="${TOKENS:-100000}"
      command -v psql >/dev/null || { echo "psql not found: PostgreSQL is needed" >&2; exit 1; }
      name="keyward_forged_$$_$RANDOM"
      psql "$PGURL/postgres" -qc "CREATE DATABASE $name" >/dev/null
      psql "$PGURL/postgres" -qc "CREATE DATABASE ${name}_empty" >/dev/null
      ON_EXIT+=("psql '$PGURL/postgres' -qc 'DROP DATABASE IF EXISTS $name WITH (FORCE)' >/dev/null")
      ON_EXIT+=("psql '$PGURL/postgres' -qc 'DROP DATABASE IF EXISTS ${name}_empty WITH (FORCE)' >/dev/null")
      db="$PGURL/$name"
      db_empty="$PGURL/${name}_empty"
      ;;
    *) echo "unknown engine $engine" >&2; exit 1 ;;
  esac
  log "$engine: seeding $n tokens"
  "$SEED" "$db" "$n" "$WORK/secrets-$engine" >&2

  # The reference for memory: the same server over an empty store.
  if [ -n "$db_empty" ]; then
    start_server "empty-$engine" "$KW" --data-dir "$empty" --database "$db_empty" serve --listen 127.0.0.1:0
  else
    start_server "empty-$engine" "$KW" --data-dir "$empty" serve --listen 127.0.0.1:0
  fi
  curl -s -o /dev/null "$URL/healthz"
  sleep 1
  rss_empty="$(rss_kib "$LAST_PID")"
  stop_pid "$LAST_PID"

  db_flag=()
  [ "$engine" = postgres ] && db_flag=(--database "$db")
  KEYWARD_CACHE_CAPACITY=$((n * 2)) start_server "kw-$engine" "$KW" --data-dir "$data" "${db_flag[@]}" serve --listen 127.0.0.1:0
  pid="$LAST_PID"
  started=$SECONDS
  # The set counts distinct fingerprints: two tokens may share one (rarely), so allow a few.
  until [ "$(metric "$URL" keyward_known_hashes)" -ge $(( n - n / 100000 )) ] 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "keyward exited" >&2; exit 1; }
    sleep 0.1
  done
  load_s=$((SECONDS - started))
  sleep 1
  rss_loaded="$(rss_kib "$pid")"
  log "$engine: known hashes loaded in ~${load_s}s; RSS $rss_empty KiB empty, $rss_loaded KiB over $n tokens"

  # Real tokens, cached after one sweep (the sweep is also their cold read).
  log "$engine: warming the cache over $n real tokens"
  warm_cache "$URL" "$WORK/secrets-$engine" "$n"
  SECRETS="$WORK/secrets-$engine" run_wrk "real-$engine" "$URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"

  lookups_before="$(metric "$URL" keyward_store_lookups_total)"
  ruled_before="$(metric "$URL" keyward_unknown_tokens_ruled_out_total)"
  SECRETS="$WORK/forged" run_wrk "forged-$engine" "$URL/v1/verify" -s "$ROOT/bench/lua/verify.lua"
  lookups_after="$(metric "$URL" keyward_store_lookups_total)"
  ruled_after="$(metric "$URL" keyward_unknown_tokens_ruled_out_total)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$engine" "$n" "$rss_empty" "$rss_loaded" \
    "$((${lookups_after:-0} - ${lookups_before:-0}))" "$((${ruled_after:-0} - ${ruled_before:-0}))" "$load_s" \
    >>"$WORK/forged-results"
  stop_pid "$pid"
done

echo
echo "## forged-token flood ($(date -Is))"
echo
echo "machine: $(machine_line)"
echo "wrk -t$THREADS -c$CONN -d$DUR, $RUNS run(s) each after a $WARM warm-up (the forged flood's warm-up requests count too); $FORGED distinct forged tokens, rotated over; bare axum hello GET in this run: $(field hello 2) req/s"
echo
echo "| engine | real tokens | forged verify req/s | ÷ hello | ÷ real cached verify | forged requests answered without a store read | store lookups per forged request | known-hash set: load time, RSS per token |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
while IFS=$'\t' read -r engine n empty loaded lookups ruled load_s; do
  awk -v e="$engine" -v n="$n" -v f="$(field "forged-$engine" 2)" -v r="$(field "real-$engine" 2)" \
      -v h="$(field hello 2)" -v lk="$lookups" -v ro="$ruled" -v em="$empty" -v ld="$loaded" -v ls="$load_s" \
    'BEGIN { total = lk + ro; printf "| %s | %d | %.0f | %.2f× | %.2f× | %d of %d | %.4f %% | ~%d s, %.1f B |\n", e, n, f, f / h, f / r, ro, total, (total ? 100 * lk / total : 0), ls, (ld - em) * 1024 / n }'
done <"$WORK/forged-results"
log "done"
