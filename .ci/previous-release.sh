#!/usr/bin/env bash
# Builds the previous release's `keyward` (the commit in .ci/previous-release) from git, in its
# own target dir, and prints the binary's path on stdout:
#   export KEYWARD_PREVIOUS_BIN=$(.ci/previous-release.sh)
# Needs the repository's history (a full clone, not a shallow one). Built once; later runs print
# the path at once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

commit=$(grep -v '^#' .ci/previous-release | head -n 1 | tr -d '[:space:]')
out="$PWD/target/previous/$commit"
if ! [ -x "$out/keyward" ]; then
  if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "FATAL: the previous release $commit is not in this repository's history (a shallow clone?)" >&2
    exit 1
  fi
  src="$PWD/target/previous/src"
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  echo "building the previous release ($commit) in target/previous" >&2
  CARGO_PROFILE_DEV_DEBUG=0 cargo build --locked --quiet -p keyward --bin keyward \
    --manifest-path "$src/Cargo.toml" --target-dir "$PWD/target/previous/target" >&2
  mkdir -p "$out"
  cp "$PWD/target/previous/target/debug/keyward" "$out/keyward"
  rm -rf "$src"
fi
echo "$out/keyward"
