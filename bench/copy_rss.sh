#!/usr/bin/env bash
# Peak memory of `shallow copy` on a 200,000-run SQLite store (10 epochs each, 2,000,000 epoch
# rows), for the binaries given (e.g. this release and the previous one), alternating, REPS
# times each. Usage: bench/copy_rss.sh OUT_DIR BINARY [BINARY...]; prints one line per copy.
set -euo pipefail
out=$1; shift
reps=${REPS:-2}
mkdir -p "$out"
db=$out/big.db
if [ ! -f "$db" ]; then
  printf 'name = "big"\n[runs]\ndataset = "mnist"\nlayers = 2\nfilters = 4\n' > "$out/grid.toml"
  "$1" sweep "$out/grid.toml" --db "$db" --no-train --offline >/dev/null
  python3 - "$db" <<'PY'
import json, random, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
config, key = c.execute("SELECT config, fuse_key FROM runs LIMIT 1").fetchone()
cfg, t = json.loads(config), time.time()
c.execute("DELETE FROM runs")
random.seed(1)
runs, epochs = [], []
for i in range(200_000):
    cfg["seed"] = i
    rid = "%016x" % random.getrandbits(64)
    runs.append((rid, "p%07d" % (i // 2), "big", "done", json.dumps(cfg), 1, "w", "h", t, t + 1,
                 1234, 2.5, 5000, 0.1, 0.9, 0.2, 0.8, 10.0, 11.0, "Cpu", 0.3, 0.7, key))
    epochs += [(rid, e, 0.5, 0.4, 0.8, 1.0, 500.0, 0.41, 0.79) for e in range(1, 11)]
c.executemany("INSERT INTO runs (id, pair_id, sweep, status, config, attempts, worker, host, "
              "claimed_at, finished_at, params, q, train_examples, final_train_loss, "
              "final_train_acc, final_val_loss, final_val_acc, train_seconds, total_seconds, "
              "device, truncated_val_loss, truncated_val_acc, fuse_key) VALUES (%s)"
              % ",".join("?" * 23), runs)
c.executemany("INSERT INTO epochs (run_id, epoch, train_loss, val_loss, val_acc, seconds, "
              "images_per_second, holdout_loss, holdout_acc) VALUES (?,?,?,?,?,?,?,?,?)", epochs)
c.commit()
PY
fi
for rep in $(seq "$reps"); do
  for bin in "$@"; do
    rm -f "$out/copy.db" "$out/copy.db-wal" "$out/copy.db-shm"
    /usr/bin/time -f "$bin rep $rep: peak RSS %M KiB, %e s" "$bin" copy "$db" "$out/copy.db" 2>&1 >/dev/null | tail -1
  done
  /usr/bin/time -f "baseline ($1 --version): peak RSS %M KiB" "$1" --version 2>&1 >/dev/null | tail -1
done
