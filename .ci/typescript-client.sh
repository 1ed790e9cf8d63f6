#!/usr/bin/env bash
# The TypeScript client (clients/typescript): install its locked dev dependencies, build it, and
# run its tests (node --test) against the real keyward binary; those tests fail if any answer
# keyward gives drifts from its own /openapi.json, or if the package's version is not keyward's.
#
#   bash .ci/typescript-client.sh                          # uses target/debug/keyward
#   KEYWARD_BIN=target/release/keyward bash .ci/typescript-client.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${KEYWARD_BIN:-target/debug/keyward}"
if ! [ -x "$bin" ]; then
  echo "FATAL: no keyward binary at $bin: build it first (cargo build -p keyward) or set KEYWARD_BIN" >&2
  exit 1
fi
KEYWARD_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
export KEYWARD_BIN
unset KEYWARD_URL

command -v node >/dev/null || { echo "FATAL: node (20 or newer) is required" >&2; exit 1; }
node --version
cd clients/typescript
npm ci --no-audit --no-fund
npm test
