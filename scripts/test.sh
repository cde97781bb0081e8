#!/usr/bin/env bash
# The project's test command: installs libtorch and the PyTorch reference (scripts/setup.sh with
# SHALLOW_TORCH_FULL=1: tests/it/fidelity.rs trains runs in PyTorch too), finds the real datasets,
# starts a throwaway PostgreSQL server (scripts/pg-test-server.sh; needs apt-get install postgresql),
# then checks formatting and runs the whole test suite, linted by clippy as it is built
# (cargo-nextest where installed: per-test times, the slowest listed at the end).
#
# Real data: $SHALLOW_DATA if set, else ../shared/data if present, else ./data (downloaded once).
set -euo pipefail
cd "$(dirname "$0")/.."
SHALLOW_TORCH_FULL=1 scripts/setup.sh
if [ -z "${SHALLOW_DATA:-}" ]; then
  if [ -d ../shared/data/mnist ]; then
    SHALLOW_DATA=$(cd ../shared/data && pwd)
  else
    SHALLOW_DATA=$PWD/data
    cargo run -q --release -- data fetch mnist
    cargo run -q --release -- data fetch cifar10
  fi
fi
export SHALLOW_DATA
echo "real data: $SHALLOW_DATA"
# The store tests run against a real PostgreSQL server: $SHALLOW_TEST_PG, else a throwaway one.
if [ -z "${SHALLOW_TEST_PG:-}" ]; then
  eval "$(scripts/pg-test-server.sh)"
fi
export SHALLOW_TEST_PG
cargo fmt --check
# Clippy lints every target of the crate (-D warnings) while it is compiled for the tests, as
# `cargo clippy` does for a check-only build (clippy-driver as the workspace's compiler wrapper):
# one compilation of the crate and its dependencies instead of two.
RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
# A build from a clean clone gains nothing from incremental compilation's bookkeeping.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# cargo-nextest (on this project's machines) runs each test in its own process and times it; the
# log ends with the slowest tests and a "N passed, N failed" line. Without it, plain cargo test.
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo test
  exit
fi
# One intra-op thread per test process: nextest runs a test per core, and libtorch's OpenMP
# threads (a team per process, spinning while they wait) would otherwise contend for the same
# cores. A test or run that sets its threads (`--threads`) still gets them.
export OMP_NUM_THREADS=1
log=$(mktemp)
status=0
cargo nextest run --no-fail-fast 2>&1 | tee "$log" || status=$?
echo
echo "slowest tests (seconds):"
# (awk reads all its input: a `head` here would end `sort` with SIGPIPE, which pipefail turns into
# the script's exit code)
sed -nE 's/^ *(PASS|FAIL|SIGSEGV|SIGABRT|TIMEOUT) \[ *([0-9.]+)s\] \( *[0-9]+\/[0-9]+\) (.*)$/\2 \3/p' "$log" |
  sort -rn | uniq | awk 'NR <= 15 { printf "  %8.1f  %s\n", $1, $2 " " $3 }'
summary=$(grep -E '^ *Summary \[' "$log" | tail -n 1 || true)
count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
echo "$(count passed) passed, $(count failed) failed, $(count skipped) skipped"
rm -f "$log"
exit "$status"
