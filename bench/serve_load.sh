#!/usr/bin/env bash
# Latency of `shallow serve`'s runs-table and verdict endpoints on a 200,000-run SQLite store
# (bench/synthetic_store.py's `serve` kind: PAIRS, default 100,000, sequential/parallel pairs).
# Usage: SHALLOW_DATA=../shared/data bench/serve_load.sh OUT_DIR SHALLOW_BINARY (a fresh OUT_DIR
# per PAIRS). Prints per endpoint: requests, p50, p95 and max in milliseconds (REPS requests
# each). The verdicts are made in the background, starting as the server starts: a request is
# answered at once with the latest page, so the time that matters is from the server's start until
# the page is made, and from a change in the store until the page shows it.
set -euo pipefail
out=$1; bin=$2
reps=${REPS:-20}
pairs=${PAIRS:-100000}
mkdir -p "$out"
db=$out/serve.db
if [ ! -f "$db" ]; then
  python3 "$(dirname "$0")/synthetic_store.py" "$bin" "$db" serve "$pairs"
fi
port=$((20000 + RANDOM % 20000))
started=$(date +%s.%N)
"$bin" serve "$db" --bind "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
sleep 1
python3 - "$port" "$reps" "$started" "$db" <<'PY'
import sqlite3, sys, time, urllib.request
port, reps, started = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def fetch(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=600) as r:
        assert r.status == 200, path
        return r.read()
def timed(path):
    start = time.perf_counter()
    fetch(path)
    return (time.perf_counter() - start) * 1000
def until_made():
    while b"every run has finished" not in fetch("/verdicts"):
        time.sleep(0.05)
    return (time.time() - started) * 1000
def report(name, times):
    times = sorted(times)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"{name:<44} n={len(times):<3} p50 {p(0.5):8.1f} ms  p95 {p(0.95):8.1f} ms  max {times[-1]:8.1f} ms")
report("verdicts: answer to the first request", [timed("/verdicts")])
report("verdicts: server start until the page is made", [until_made()])
report("verdicts: once made (store unchanged)", [timed("/verdicts") for _ in range(reps)])
def until_remade():
    """A run fails (as a worker would record it): time until the page counts it; then undone."""
    db = sqlite3.connect(sys.argv[4])
    (rid,) = db.execute("SELECT id FROM runs WHERE status = 'done' LIMIT 1").fetchone()
    db.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (rid,))
    db.commit()
    start = time.perf_counter()
    while b"1 failed" not in fetch("/verdicts"):
        time.sleep(0.05)
    made = (time.perf_counter() - start) * 1000
    db.execute("UPDATE runs SET status = 'done' WHERE id = ?", (rid,))
    db.commit()
    return made
report("verdicts: a run fails until the page shows it", [until_remade()])
report("table: first request by a setting", [timed("/api/runs?limit=50&sort=layers")])
pages = {
    "table: first page, queue order": "/api/runs?limit=50",
    "table: page 2,000 (offset 100,000)": "/api/runs?limit=50&offset=100000",
    "table: sorted by val loss, descending": "/api/runs?limit=50&sort=final_val_loss&desc=1",
    "table: sorted by a setting (filters)": "/api/runs?limit=50&sort=filters",
    "table: filtered layers=4, dataset=cifar10": "/api/runs?limit=50&layers=4&dataset=cifar10",
    "table: filtered status=done, sorted by q": "/api/runs?limit=50&status=done&sort=q",
    "table: layers=4, status=done, sorted by q": "/api/runs?limit=50&layers=4&status=done&sort=q",
    "progress": "/api/progress",
}
for name, path in pages.items():
    report(name, [timed(path) for _ in range(reps)])
PY
