#!/usr/bin/env bash
# `promtool check metrics` (Debian's prometheus package) on a running keyward's /metrics, after
# traffic that touches every family: verifications of each kind, management calls, a refusal.
#
#   bash .ci/metrics.sh            # uses target/debug/keyward (cargo test --workspace builds it)
#   KEYWARD_BIN=target/release/keyward bash .ci/metrics.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${KEYWARD_BIN:-target/debug/keyward}"
[ -x "$bin" ] || { echo "FATAL: no keyward binary at $bin (run cargo build -p keyward)" >&2; exit 1; }
command -v promtool >/dev/null || { echo "FATAL: promtool is not installed (apt-get install prometheus)" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
kw() { env -u KEYWARD_DATABASE_URL -u KEYWARD_CONFIG "$bin" --data-dir "$work" "$@"; }
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# Not through kw: a backgrounded function is a subshell, and killing it would leave the server.
env -u KEYWARD_DATABASE_URL -u KEYWARD_CONFIG "$bin" --data-dir "$work" serve --listen "127.0.0.1:$port" \
  > "$work/server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
kw user add metrics >/dev/null
secret="$(kw token create --user metrics --name promtool --scope tokens:read --expires 1d 2>/dev/null)"
verify() { curl -s -o /dev/null -H 'content-type: application/json' -d "$1" "$base/v1/verify"; }
for _ in $(seq 1 40); do
  verify "{\"token\":\"$secret\"}"
  verify "{\"token\":\"$secret\",\"scopes\":[\"tokens:create\"]}"
  verify '{"token":"kwp_nothing"}'
done
curl -s -o /dev/null -H "Authorization: Bearer $secret" "$base/v1/tokens"
curl -fsS "$base/metrics" > "$work/metrics.txt"
promtool check metrics < "$work/metrics.txt"
echo "promtool: $(grep -c '^# TYPE' "$work/metrics.txt") metric families pass"
