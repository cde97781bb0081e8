#!/usr/bin/env bash
# The project's test command: installs libtorch and the PyTorch reference (scripts/setup.sh with
# SHALLOW_TORCH_FULL=1: tests/it/fidelity.rs trains runs in PyTorch too), finds the real datasets,
# starts a throwaway PostgreSQL server (scripts/pg-test-server.sh; needs apt-get install postgresql),
# then runs formatting and lint checks and the whole test suite.
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
cargo clippy -q --all-targets -- -D warnings
cargo test
