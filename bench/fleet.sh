#!/usr/bin/env bash
# keyward as a fleet on one PostgreSQL, simulated on this machine (issue 15; docs/SCALING.md
# reads its figures from this script's run).
#
#   bench/fleet.sh                 # N = 1, 2, 4, 8
#   FLEET="1 2" bench/fleet.sh     # a quick run
#
# For each N in $FLEET: a fresh database on the PostgreSQL at $PGURL (default
# postgres://postgres@127.0.0.1:5432, trust auth), N `keyward serve` instances on it sharing one
# server key (each LISTENs for the change feed, as a fleet's instances do), then:
#   idle     PostgreSQL's write transactions per second with the fleet idle for $IDLE s
#            (default 5): what N instances write when nobody calls them;
#   busy     the same while bench/tools' `propagate` runs $REVOCATIONS rounds (default 100) of
#            create through instance 1, verify twice on instance N, revoke through instance 1,
#            poll instance N until it answers `revoked`, and the write transactions per round
#            (a round is two changes). Write transactions are counted by transaction ids
#            (`txid_current()`, exact at once; the statistics views lag by up to 10 s); reads,
#            such as each instance's catch-up read of the change log, take none;
#   the database's connections (pg_stat_activity) with the fleet up;
#   propagation p50 / p99 of a revocation (acknowledged by instance 1 -> instance N refuses) and
#   of a creation (acknowledged by instance 1 -> instance N accepts: until its change feed brings
#   the new hash, it answers `unknown`), and instance N's cold verification (a token it has never
#   seen) p50 / p99, over HTTP.
# With N = 1, instance N is instance 1. Every instance runs on this machine's cores, so at N = 8
# they share two cores: read the growth with N, not the absolute figures. Drops each database
# at the end. Binds 127.0.0.1 only.
set -euo pipefail
FLEET="${FLEET:-1 2 4 8}"
REVOCATIONS="${REVOCATIONS:-100}"
IDLE="${IDLE:-5}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_postgres
build_release
new_server_key
export KEYWARD_LOG=warn
log "machine: $(machine_line)"

# xid : the server's next transaction id (this call takes one; `rate` and `per_round` subtract
# it). Nothing else writes on the benchmark's PostgreSQL meanwhile.
xid() { psql "$PGURL/postgres" -qtAc "SELECT txid_current()"; }
# connections DB : the database's connections now.
connections() {
  psql "$PGURL/postgres" -qtAc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$1'"
}
# field OUTPUT LABEL N : the Nth number on `propagate`'s line LABEL.
field() { printf '%s\n' "$1" | grep -F "$2" | grep -oE '[0-9]+ µs' | sed -n "$3p" | cut -d' ' -f1; }
now() { date +%s.%N; }
rate() { awk -v a="$1" -v b="$2" -v s="$3" -v e="$4" 'BEGIN { printf "%.1f", (b - a - 1) / (e - s) }'; }
per_round() { awk -v a="$1" -v b="$2" -v r="$REVOCATIONS" 'BEGIN { printf "%.1f", (b - a - 1) / r }'; }

ROWS="$WORK/rows"
: >"$ROWS"
for n in $FLEET; do
  db="keyward_fleet_$$_${n}_$RANDOM"
  fresh_database "$db"
  export KEYWARD_DATABASE_URL="$PGURL/$db"
  "$KW" --data-dir "$WORK/$db-0" user add bench >/dev/null
  admin="$("$KW" --data-dir "$WORK/$db-0" token create --user bench --name fleet \
    --scope 'tokens:*' --scope droplet:read --expires 1d 2>/dev/null)"
  urls=()
  pids=()
  for i in $(seq 0 $((n - 1))); do
    start_server "$db-$i" "$KW" --data-dir "$WORK/$db-$i" serve --listen 127.0.0.1:0
    urls+=("$URL")
    pids+=("$LAST_PID")
  done
  log "N=$n: ${#urls[@]} instances on $db"
  sleep 1
  c0="$(xid)"; t0="$(now)"
  sleep "$IDLE"
  c1="$(xid)"; t1="$(now)"
  conns="$(connections "$db")"
  out="$("$PROPAGATE" "${urls[0]}" "${urls[$((n - 1))]}" "$admin" "$REVOCATIONS")"
  c2="$(xid)"; t2="$(now)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$conns" \
    "$(rate "$c0" "$c1" "$t0" "$t1")" "$(rate "$c1" "$c2" "$t1" "$t2")" \
    "$(per_round "$c1" "$c2")" \
    "$(field "$out" 'propagation delay' 1)" "$(field "$out" 'propagation delay' 2)" \
    "$(field "$out" 'creation propagation' 1)" "$(field "$out" 'creation propagation' 2)" \
    "$(printf '%s\n' "$out" | awk -F'\t' '/answered unknown/ { print $2 }')" \
    "$(field "$out" 'cold verify' 1)" "$(field "$out" 'cold verify' 2)" \
    "$(printf '%s\n' "$out" | awk -F'\t' '/still active/ { print $2 }')" >>"$ROWS"
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
done

echo
echo "## keyward fleet on one PostgreSQL ($(date -Is))"
echo
echo "machine: $(machine_line); $REVOCATIONS revocations per N, idle window ${IDLE}s"
echo
echo "| instances | PG connections | PG write tx/s idle | PG write tx/s busy | PG write tx per round | revocation propagation p50 / p99 µs | creation propagation p50 / p99 µs | rounds answered unknown first | cold verify p50 / p99 µs | rounds still active at first poll |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s / %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 }' "$ROWS"
echo
log "done"
