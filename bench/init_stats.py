"""Do shallow's initial weights start training like PyTorch's? For every seed with a shallow trace
(`shallow train … --seed S --trace DIR/S`), builds the net from shallow's initial weights and from
PyTorch's (torch.manual_seed(S)) and compares, over the seeds, the spread of the activations after
the stem and after every unit, the initial loss and logit spread on 300 training images, and the
gradient norm on 64 — Welch's t-test per statistic. Needs scipy.

  for s in $(seq 1000 1199); do shallow train --dataset mnist --subset first --train-limit 10 \\
      --val-limit 10 --batch-size 10 --layers 4 --filters 16 --layout sequential --seed $s \\
      --threads 1 --offline --trace traces/$s; done
  .venv/bin/python bench/init_stats.py --traces traces --data-dir ../shared/data
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

CFG = {"layout": "sequential", "layers": 4, "filters": 16, "kernel": 3, "pool": "none",
       "activation": "relu", "batchnorm": False, "head": "flatten"}
NAMES = ["stem std", "h1 std", "h2 std", "h3 std", "h4 std", "init loss", "logit std", "grad norm"]


def statistics(net, x, y):
    with torch.no_grad():
        h = F.relu(net.stem(x))
        out = [h.std().item()]
        for i in range(len(net.units)):
            h = h + net.unit(i, h)
            out.append(h.std().item())
        logits = net.head(h.flatten(1))
        out += [F.cross_entropy(logits, y).item(), logits.std().item()]
    net.zero_grad()
    F.cross_entropy(net(x[:64]), y[:64]).backward()
    out.append(sum(p.grad.norm() ** 2 for p in net.parameters()).sqrt().item())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", required=True)
    p.add_argument("--data-dir", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    d = R.load_data(args.data_dir, "mnist", 5000, 2000, "first")
    x, y = d["train_x"][:300], d["train_y"][:300]
    seeds = sorted(int(s) for s in os.listdir(args.traces)
                   if s.isdigit() and os.path.exists(os.path.join(args.traces, s, "trace.npz")))
    ours, theirs = [], []
    for s in seeds:
        net = R.build(CFG, (1, 28, 28))
        R.load_initial(net, np.load(os.path.join(args.traces, str(s), "trace.npz")))
        ours.append(statistics(net, x, y))
        torch.manual_seed(s)
        theirs.append(statistics(R.build(CFG, (1, 28, 28)), x, y))
    o, t = np.array(ours), np.array(theirs)
    print(f"seeds {seeds[0]}–{seeds[-1]}, n = {len(o)} per side; mean ± standard error")
    for i, name in enumerate(NAMES):
        se = lambda a: a[:, i].std() / np.sqrt(len(a))
        p_value = stats.ttest_ind(o[:, i], t[:, i], equal_var=False).pvalue
        print(f"{name:10s} shallow {o[:, i].mean():.4f}±{se(o):.4f}  torch {t[:, i].mean():.4f}±{se(t):.4f}"
              f"  Welch p {p_value:.3g}")


if __name__ == "__main__":
    main()
