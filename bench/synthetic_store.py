"""Fills a results store with synthetic finished runs for the benchmarks, through the schema a
real `shallow sweep --no-train` creates. Kinds:
  copy   200,000 runs of one configuration (seeds 0…), constant losses, 10 epochs each with
         held-out columns (bench/copy_rss.sh);
  serve  PAIRS sequential/parallel pairs of PAIRS/3 configurations (2 datasets, 2 heads, 4
         depths, 3 widths, BN off/on, training sizes) × 3 seeds, random losses, 10 epochs each
         (bench/serve_load.sh).
Usage: python3 bench/synthetic_store.py SHALLOW_BINARY DB copy|serve [PAIRS]"""
import json, os, random, sqlite3, subprocess, sys, time

RUN_COLUMNS = ("id", "pair_id", "sweep", "status", "config", "attempts", "worker", "host",
               "claimed_at", "finished_at", "params", "q", "train_examples", "final_train_loss",
               "final_train_acc", "final_val_loss", "final_val_acc", "train_seconds",
               "total_seconds", "device", "truncated_val_loss", "truncated_val_acc", "fuse_key")
EPOCH_COLUMNS = ("run_id", "epoch", "train_loss", "val_loss", "val_acc", "seconds",
                 "images_per_second", "holdout_loss", "holdout_acc")


def copy_runs(base, sweep, t, key, _pairs):
    for i in range(200_000):
        base["seed"] = i
        rid = "%016x" % random.getrandbits(64)
        yield ((rid, "p%07d" % (i // 2), sweep, "done", json.dumps(base), 1, "w", "h", t, t + 1,
                1234, 2.5, 5000, 0.1, 0.9, 0.2, 0.8, 10.0, 11.0, "Cpu", 0.3, 0.7, key),
               [(rid, e, 0.5, 0.4, 0.8, 1.0, 500.0, 0.41, 0.79) for e in range(1, 11)])


def serve_runs(base, sweep, t, key, pairs):
    for i in range(pairs):
        k = i // 3
        cfg = dict(base, dataset=["mnist", "cifar10"][k % 2], head=["flatten", "gap"][k // 2 % 2],
                   layers=[2, 4, 6, 8][k // 4 % 4], filters=[8, 16, 32][k // 16 % 3],
                   batchnorm=bool(k // 48 % 2), train_limit=1000 + k // 96, seed=i % 3)
        pair = "p%015d" % i
        q = random.uniform(0.2, 30)
        seq_loss = random.uniform(0.1, 2.0)
        for layout, loss in (("sequential", seq_loss),
                             ("parallel", seq_loss * random.gauss(1.02, 0.1))):
            cfg["layout"] = layout
            rid = "%016x" % random.getrandbits(64)
            yield ((rid, pair, sweep, "done", json.dumps(cfg), 1, "w", "h", t, t + 1, 1234, q,
                    5000, loss * 0.8, 0.9, loss, 0.8, 10.0, 11.0, "Cpu", loss * 1.1, 0.7, key),
                   [(rid, e, loss + 1 / e, loss + 0.5 / e, 0.8, 1.0, 500.0, None, None)
                    for e in range(1, 11)])


def main(binary, db, kind, pairs=100_000):
    folder = os.path.dirname(os.path.abspath(db))
    grid = os.path.join(folder, "grid.toml")
    with open(grid, "w") as f:
        f.write('name = "%s"\n[runs]\ndataset = "mnist"\nlayers = 2\nfilters = 4\n' % kind)
    subprocess.run([binary, "sweep", grid, "--db", db, "--no-train", "--offline"], check=True,
                   stdout=subprocess.DEVNULL)
    c = sqlite3.connect(db)
    sweep, config, key = c.execute("SELECT sweep, config, fuse_key FROM runs LIMIT 1").fetchone()
    c.execute("DELETE FROM runs")
    random.seed(1)
    make = {"copy": copy_runs, "serve": serve_runs}[kind]
    runs, epochs = [], []
    for run, its_epochs in make(json.loads(config), sweep, time.time(), key, int(pairs)):
        runs.append(run)
        epochs += its_epochs
    c.executemany("INSERT INTO runs (%s) VALUES (%s)"
                  % (", ".join(RUN_COLUMNS), ",".join("?" * len(RUN_COLUMNS))), runs)
    c.executemany("INSERT INTO epochs (%s) VALUES (%s)"
                  % (", ".join(EPOCH_COLUMNS), ",".join("?" * len(EPOCH_COLUMNS))), epochs)
    c.commit()


if __name__ == "__main__":
    main(*sys.argv[1:])
