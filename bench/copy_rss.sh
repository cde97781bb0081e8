#!/usr/bin/env bash
# Peak memory of `shallow copy` on a 200,000-run SQLite store (bench/synthetic_store.py's `copy`
# kind: 10 epochs each, 2,000,000 epoch rows), for the binaries given (e.g. this release and the
# previous one), alternating, REPS times each. Usage: SHALLOW_DATA=../shared/data
# bench/copy_rss.sh OUT_DIR BINARY [BINARY...]; prints one line per copy.
set -euo pipefail
out=$1; shift
reps=${REPS:-2}
mkdir -p "$out"
db=$out/big.db
if [ ! -f "$db" ]; then
  python3 "$(dirname "$0")/synthetic_store.py" "$1" "$db" copy
fi
for rep in $(seq "$reps"); do
  for bin in "$@"; do
    rm -f "$out/copy.db" "$out/copy.db-wal" "$out/copy.db-shm"
    /usr/bin/time -f "$bin rep $rep: peak RSS %M KiB, %e s" "$bin" copy "$db" "$out/copy.db" 2>&1 >/dev/null | tail -1
  done
  /usr/bin/time -f "baseline ($1 --version): peak RSS %M KiB" "$1" --version 2>&1 >/dev/null | tail -1
done
