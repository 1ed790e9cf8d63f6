#!/usr/bin/env bash
# Tests the Python client (clients/python) against the real keyward binary: installs the package
# with its test extras from the repository path into a virtualenv made here, type-checks it, and
# runs its pytest suite (which starts the binary and checks every answer against /openapi.json).
#
#   bash .ci/python-client.sh                      # needs target/debug/keyward (cargo test builds it)
#   KEYWARD_BIN=target/release/keyward bash .ci/python-client.sh
#
# Env: PYTHON_CLIENT_VENV (default target/python-client-venv). Builds nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${PYTHON_CLIENT_VENV:-$PWD/target/python-client-venv}"
bin="${KEYWARD_BIN:-$PWD/target/debug/keyward}"
if ! [ -x "$bin" ]; then
  echo "FATAL: no keyward binary at $bin: run 'cargo build -p keyward' (or 'cargo test --workspace') first, or set KEYWARD_BIN" >&2
  exit 1
fi
export KEYWARD_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

if ! [ -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pip() { "$venv/bin/pip" --quiet --disable-pip-version-check "$@"; }
pip install "./clients/python[test]"
# The package itself from this tree, even if the same version is installed already.
pip install --no-deps --force-reinstall ./clients/python
"$venv/bin/python" --version

echo "type check (mypy --strict)"
(cd clients/python && "$venv/bin/mypy" --strict -p keyward)

(cd clients/python && "$venv/bin/python" -m pytest -q)
