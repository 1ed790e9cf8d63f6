#!/usr/bin/env bash
# Fuzzes the running server against its own /openapi.json with schemathesis (from PyPI, in a
# virtualenv made here): no 5xx, and every answer conforms to the documented schema.
#
#   bash .ci/schemathesis.sh            # builds the debug binary if needed
#   KEYWARD_BIN=target/release/keyward bash .ci/schemathesis.sh
#
# Env: SCHEMATHESIS_VENV (default target/schemathesis-venv), SCHEMATHESIS_MAX_EXAMPLES (25).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${SCHEMATHESIS_VENV:-$PWD/target/schemathesis-venv}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
bin="${KEYWARD_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --locked -p keyward
  bin=target/debug/keyward
fi

if ! [ -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis
fi
"$venv/bin/schemathesis" --version

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

data="$work/data"
kw() { env -u KEYWARD_DATABASE_URL -u KEYWARD_CONFIG "$bin" --data-dir "$data" "$@"; }
kw user add fuzzer >/dev/null
token="$(kw token create --user fuzzer --name schemathesis --scope '*:*' --expires 1d 2>/dev/null)"
# A second one for the run that regenerates its own token (the first may be revoked by then).
kw user add rotator >/dev/null
token2="$(kw token create --user rotator --name self-rotation --scope '*:*' --expires 1d 2>/dev/null)"
# Something to find: a few more tokens of the same user.
kw token create --user fuzzer --name other --scope droplet:read --expires 1d >/dev/null 2>&1

# Not through kw: a backgrounded function is a subshell, and killing it would leave the server.
env -u KEYWARD_DATABASE_URL -u KEYWARD_CONFIG "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 \
  >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
base=""
for _ in $(seq 1 200); do
  if line="$(grep -m1 '^listening on ' "$work/stdout" 2>/dev/null)"; then base="${line#listening on }"; break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "FATAL: keyward did not start" >&2; cat "$work/stderr" >&2; exit 1
fi
echo "keyward at $base"

run() {
  local bearer="$1"
  shift
  # From the temp dir: schemathesis leaves its state (.schemathesis/) in the working directory.
  (cd "$work" && "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "$max_examples" \
    --header "Authorization: Bearer $bearer" \
    --generation-database none \
    --workers 1 --no-color --request-timeout 10 \
    "$@")
}

status=0
if [ -n "${SCHEMATHESIS_DEBUG:-}" ]; then trap - EXIT; echo "data: $data"; fi
# A token that regenerates itself (`/v1/tokens/self/regenerate`, or `{id}` = `self`) loses its
# secret, and every later call would only exercise 401s: those operations run last, with
# another user's token.
run "$token" --exclude-path-regex '/regenerate$' || status=$?
run "$token2" --include-path-regex '/regenerate$' || status=$?

if grep -q 'panicked' "$work/stderr"; then
  echo "FATAL: the server panicked:" >&2; grep -A5 panicked "$work/stderr" >&2; status=1
fi
if [ "$status" -ne 0 ]; then
  echo "FATAL: schemathesis found answers that break the OpenAPI document or are 5xx (above)" >&2
  exit "$status"
fi
echo "schemathesis: no 5xx, every answer conforms to /openapi.json"
