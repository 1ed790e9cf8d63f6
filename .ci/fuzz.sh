#!/usr/bin/env bash
# CI step "fuzz": builds the fuzz targets in fuzz/ with cargo-fuzz on the stable toolchain
# (libFuzzer, `--sanitizer none`: see fuzz/README.md for why) and runs each one for a bounded
# time from its committed seeds, which include every input a fuzzer has crashed on so far.
# Fails if a target panics, hangs, outgrows 2 GiB, cannot be built, or runs uninstrumented.
#
#   bash .ci/fuzz.sh            # about 100 s of fuzzing after the build
#   FUZZ_SCALE=10 bash .ci/fuzz.sh   # ten times longer per target
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
# Seconds per target; the whole-app target gets the most, being about a thousand times slower.
TARGETS=(token_format:10 scopes:15 expiry:15 forward_auth_path:15 http_app:45)
SCALE="${FUZZ_SCALE:-1}"

# One target dir with the main workspace, so the fuzz crate's lint reuses what the main lint
# built; the instrumented build goes to its own per-triple directory inside it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

fail() { echo "FATAL: $*" >&2; exit 1; }

# The point of this step is that fuzzing works where only stable Rust does.
if [ -n "${RUSTC_BOOTSTRAP:-}" ]; then fail "RUSTC_BOOTSTRAP is set; the fuzz build must not use nightly features"; fi
rustc --version
if rustc --version | grep -q nightly; then fail "the fuzz step runs on the stable toolchain, not $(rustc --version)"; fi

if ! command -v c++ >/dev/null; then
  # libfuzzer-sys compiles libFuzzer (C++) in its build script.
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y g++
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
cargo fuzz --version

echo "--- lint the fuzz crate"
cargo fmt --manifest-path fuzz/Cargo.toml --check
# --locked here also stands for the build below (cargo fuzz has no --locked): a fuzz/Cargo.lock
# that the build would have to change fails now.
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings

echo "--- build (instrumented for coverage, no sanitizer)"
cargo fuzz build --sanitizer none
bin="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Where new inputs go: a scratch directory in CI; locally the working corpus fuzz/corpus/TARGET,
# kept between runs (and ignored by git).
if [ "${CI:-}" = true ]; then corpus_root="$work/corpus"; else corpus_root=fuzz/corpus; fi
passed=0 failed=0
for entry in "${TARGETS[@]}"; do
  target="${entry%%:*}"
  seconds=$(( ${entry##*:} * SCALE ))
  seeds="fuzz/seeds/$target"
  [ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] || fail "no seeds for $target in $seeds"
  mkdir -p "$corpus_root/$target"
  log="$work/$target.log"
  echo "--- $target: ${seconds}s from $(ls "$seeds" | wc -l) seeds"
  dict=()
  if [ -f "fuzz/$target.dict" ]; then dict=("-dict=fuzz/$target.dict"); fi
  # What `cargo fuzz run` runs, started directly so that `timeout` reaches the fuzzer itself.
  # New inputs go to the corpus listed first; the committed seeds are only read.
  # -timeout: one input taking 10 s is a hang, and a failure.
  rm -rf "fuzz/artifacts/$target" && mkdir -p "fuzz/artifacts/$target"
  rc=0
  timeout --kill-after=10 $(( seconds + 120 )) \
    "$bin/$target" -artifact_prefix="fuzz/artifacts/$target/" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "${dict[@]}" "$corpus_root/$target" "$seeds" >"$log" 2>&1 || rc=$?
  grep -E '^INFO: Loaded|INITED|DONE|^Done|stat::number_of_executed_units|stat::new_units_added' "$log" || true
  counters="$(sed -n 's/^INFO: Loaded [0-9]* modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -1)"
  runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log")"
  if [ "$rc" -ne 0 ]; then
    echo "!!! $target failed (exit $rc):" >&2
    grep -m1 -A2 'panicked at' "$log" >&2 || true
    echo "!!! the end of its log:" >&2
    tail -n 30 "$log" >&2
    for artifact in fuzz/artifacts/"$target"/*; do
      [ -f "$artifact" ] || continue
      echo "!!! crashing input $artifact (base64; replay with: cargo fuzz run -s none $target $artifact):" >&2
      base64 "$artifact" >&2
    done
    failed=$((failed + 1))
  elif [ -z "$counters" ] || [ "$counters" -eq 0 ]; then
    echo "!!! $target ran without coverage counters: the build is not instrumented" >&2
    failed=$((failed + 1))
  elif [ -z "$runs" ] || [ "$runs" -eq 0 ]; then
    echo "!!! $target finished without running any input" >&2
    tail -n 30 "$log" >&2
    failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
