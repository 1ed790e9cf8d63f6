#!/usr/bin/env bash
# Revocation propagation between two keyward instances on one PostgreSQL (issue 3, acceptance 7).
#
#   bench/propagation.sh
#
# Creates a fresh database on the PostgreSQL at $PGURL (default postgres://postgres@127.0.0.1:5432,
# trust auth), starts two `keyward serve --database ...` instances A and B sharing one server key,
# and runs bench/tools/src/bin/propagate.rs: $REVOCATIONS (default 200) tokens are created and
# revoked through A, each timed from A's acknowledgement until B's /v1/verify answers `revoked`
# (tight poll loop on B). Drops the database at the end. Binds 127.0.0.1 only.
set -euo pipefail
REVOCATIONS="${REVOCATIONS:-200}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_postgres
build_release
DB="keyward_bench_$$_$RANDOM"
fresh_database "$DB"
export KEYWARD_DATABASE_URL="$PGURL/$DB"
new_server_key
export KEYWARD_LOG=warn
log "machine: $(machine_line)"

"$KW" --data-dir "$WORK/a" user add bench >/dev/null
ADMIN="$("$KW" --data-dir "$WORK/a" token create --user bench --name propagation \
  --scope 'tokens:*' --scope droplet:read --expires 1d 2>/dev/null)"
start_server a "$KW" --data-dir "$WORK/a" serve --listen 127.0.0.1:0
A_URL="$URL"
start_server b "$KW" --data-dir "$WORK/b" serve --listen 127.0.0.1:0
B_URL="$URL"
log "A at $A_URL, B at $B_URL, database $DB; $REVOCATIONS revocations"
echo
echo "## revocation propagation, PostgreSQL, two instances ($(date -Is))"
echo "machine: $(machine_line)"
"$PROPAGATE" "$A_URL" "$B_URL" "$ADMIN" "$REVOCATIONS" | column -t -s $'\t'
log "done"
