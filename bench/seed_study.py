"""Seed study: do shallow's runs train like plain PyTorch's on the same protocol, or do its random
streams (initial weights, example order) make them train differently?

A 2×2 design over N seeds, each run one thread:
  shallow        shallow train            (shallow's initial weights, shallow's order)
  shallow-init   reference.py train --init-from  (shallow's weights, PyTorch's order)
  shallow-order  reference.py train --order-from (PyTorch's weights, shallow's order)
  torch          reference.py train       (PyTorch's weights and order: torch.manual_seed)
The protocol is the one of the fidelity issue: MNIST, the first 5,000 training and 2,000 test
images, batch 64, 3 epochs, Adam 1e-3, L = 4, F = 16, k = 3, no pool, flatten head, sequential.

  .venv/bin/python bench/seed_study.py --data-dir ../shared/data --seeds 40 --jobs 2 \
      --out bench/results/seed-study-2026-11-30

writes OUT.csv (one row per run) and OUT.txt (the tests). Needs scipy and statsmodels
(`.venv/bin/python -m pip install scipy statsmodels`).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROTOCOL = {"dataset": "mnist", "subset": "first", "train-limit": 5000, "val-limit": 2000,
            "batch-size": 64, "epochs": 3, "lr": 1e-3, "layers": 4, "filters": 16, "kernel": 3,
            "layout": "sequential"}
CONDITIONS = ["shallow", "shallow-init", "shallow-order", "torch"]


def flags(seed):
    return [f"--{k}={v}" for k, v in PROTOCOL.items()] + [f"--seed={seed}"]


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def one_seed(args, seed):
    """The conditions of one seed; shallow first, its trace feeds the two crossed ones."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trace, result = os.path.join(tmp, "trace"), os.path.join(tmp, "run.json")
        subprocess.run([args.shallow, "train", *flags(seed), "--threads=1", "--offline",
                        f"--data-dir={args.data_dir}", f"--trace={trace}", f"--json={result}"],
                       check=True, capture_output=True)
        with open(result) as f:
            r = json.load(f)
        rows.append({"condition": "shallow", "seed": seed, "final_train_loss": r["final_train_loss"],
                     "final_val_loss": r["final_val_loss"], "final_val_acc": r["final_val_acc"],
                     "epoch1_val_loss": r["epochs"][0]["val_loss"]})
        ref = [sys.executable, os.path.join(HERE, "reference.py"), "train", *flags(seed),
               "--threads=1", f"--data-dir={args.data_dir}"]
        for condition, extra in (("shallow-init", [f"--init-from={trace}"]),
                                 ("shallow-order", [f"--order-from={trace}"]), ("torch", [])):
            if condition not in args.conditions:
                continue
            r = run_json(ref + extra)
            rows.append({"condition": condition, "seed": seed, "final_train_loss": r["final_train_loss"],
                         "final_val_loss": r["final_val_loss"], "final_val_acc": r["final_val_acc"],
                         "epoch1_val_loss": r["epochs"][0][0]})
    print(f"seed {seed}: " + ", ".join(f"{x['condition']} {x['final_train_loss']:.4f}" for x in rows),
          flush=True)
    return rows


def describe(x):
    return (f"n = {len(x)}, mean {np.mean(x):.4f}, median {np.median(x):.4f}, "
            f"sd {np.std(x, ddof=1):.4f}")


def compare(a, b, label, margin_rel=0.10):
    """Mann–Whitney U (two-sided), Welch's t interval of the difference of means, and a two-sample
    TOST with a margin of ±10 % of b's mean (statsmodels ttost_ind, unequal variances)."""
    from scipy import stats
    from statsmodels.stats.weightstats import ttost_ind
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    welch = stats.ttest_ind(a, b, equal_var=False)
    ci = welch.confidence_interval(0.95)
    margin = margin_rel * np.mean(b)
    tost = ttost_ind(np.asarray(a), np.asarray(b), -margin, margin, usevar="unequal")[0]
    return (f"{label}: Δmean {np.mean(a) - np.mean(b):+.4f} (95% Welch CI {ci.low:+.4f} to "
            f"{ci.high:+.4f}); Mann–Whitney U = {u.statistic:.0f}, two-sided p = {u.pvalue:.3f}; "
            f"TOST (margin ±{margin:.4f} = ±{100 * margin_rel:.0f}% of the second mean) p = {tost:.3g}")


def summarise(rows):
    present = [c for c in CONDITIONS if any(r["condition"] == c for r in rows)]
    by = {c: {k: [r[k] for r in rows if r["condition"] == c] for k in rows[0] if k not in ("condition", "seed")}
          for c in present}
    lines = ["Protocol: " + json.dumps(PROTOCOL),
             "Seeds: " + ", ".join(str(s) for s in sorted({r["seed"] for r in rows})), ""]
    for metric in ("final_train_loss", "final_val_loss", "epoch1_val_loss"):
        lines.append(f"## {metric}")
        for c in present:
            lines.append(f"  {c:14s} {describe(by[c][metric])}")
        lines.append("  " + compare(by["shallow"][metric], by["torch"][metric], "shallow vs torch"))
        if len(present) < len(CONDITIONS):
            lines.append("")
            continue
        init_ours = by["shallow"][metric] + by["shallow-init"][metric]
        init_torch = by["shallow-order"][metric] + by["torch"][metric]
        lines.append("  " + compare(init_ours, init_torch, "initial weights shallow vs torch (both orders pooled)"))
        order_ours = by["shallow"][metric] + by["shallow-order"][metric]
        order_torch = by["shallow-init"][metric] + by["torch"][metric]
        lines.append("  " + compare(order_ours, order_torch, "example order shallow vs torch (both inits pooled)"))
        lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--conditions", default=",".join(CONDITIONS),
                   help="comma-separated subset of " + ", ".join(CONDITIONS) + " (shallow always runs)")
    p.add_argument("--shallow", default=os.path.join(ROOT, "target/release/shallow"))
    p.add_argument("--out", required=True, help="path prefix of OUT.csv and OUT.txt")
    args = p.parse_args()
    # Rows are appended as seeds finish; seeds already in OUT.csv are not run again (resume).
    path, rows = args.out + ".csv", []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = [{k: (int(v) if k == "seed" else v if k == "condition" else float(v)) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    done = {r["seed"] for r in rows}
    seeds = [s for s in range(args.first_seed, args.first_seed + args.seeds) if s not in done]
    with open(path, "a", newline="") as f, ThreadPoolExecutor(args.jobs) as pool:
        w = csv.DictWriter(f, fieldnames=["condition", "seed", "final_train_loss", "final_val_loss",
                                          "final_val_acc", "epoch1_val_loss"])
        if not rows:
            w.writeheader()
        for new in pool.map(lambda s: one_seed(args, s), seeds):
            w.writerows(new)
            f.flush()
            rows.extend(new)
    text = summarise(rows)
    with open(args.out + ".txt", "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
