"""PyTorch reference for `shallow bench`: the same model, data shapes, optimizer and training step
in plain PyTorch, as a researcher would write it. Prints one JSON object per measurement.

  python bench/reference.py step --net mnist --layout parallel --threads 2 --steps 40
  python bench/reference.py step --net cifar --layout sequential --threads 2 --steps 400 \
      --device cuda --precision bf16
  python bench/reference.py sweep --data-dir ../shared/data --threads 2

The model matches src/model.rs: stem conv k×k + ReLU, L residual units φ(conv_i(h)) either stacked
(sequential) or summed side by side (parallel), flatten → linear. The parallel layout here is the
straightforward one (a ModuleList of L convolutions whose outputs are summed), which is what a
researcher would write first. bf16 is torch.autocast, PyTorch's own mixed precision. On CUDA,
cuDNN's autotuner is switched on, as shallow does, so that neither side wins by that flag alone.
"""
import contextlib
import argparse
import gzip
import json
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NETS = {
    # name: (channels, side, layers, filters, kernel, pool)
    "mnist": (1, 28, 4, 32, 3, False),
    "cifar": (3, 32, 4, 64, 3, False),
    "tiny": (1, 28, 2, 8, 3, False),
    "deep": (1, 28, 10, 16, 5, False),
}


class Net(nn.Module):
    def __init__(self, layout, channels, side, layers, filters, kernel, pool):
        super().__init__()
        self.layout, self.pool = layout, pool
        pad = kernel // 2
        self.stem = nn.Conv2d(channels, filters, kernel, padding=pad)
        self.units = nn.ModuleList(
            nn.Conv2d(filters, filters, kernel, padding=pad) for _ in range(layers)
        )
        feat = side // 2 if pool else side
        self.head = nn.Linear(filters * feat * feat, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        if self.pool:
            h = F.max_pool2d(h, 2)
        if self.layout == "sequential":
            for conv in self.units:
                h = h + F.relu(conv(h))
        else:
            h = h + sum(F.relu(conv(h)) for conv in self.units)
        return self.head(h.flatten(1))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def step_bench(args):
    c, side, layers, filters, kernel, pool = NETS[args.net]
    torch.manual_seed(0)
    net = Net(args.layout, c, side, layers, filters, kernel, pool).to(args.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(args.batch, c, side, side, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    if args.precision == "bf16":
        autocast = lambda: torch.autocast(args.device, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext

    def step():
        opt.zero_grad()
        with autocast():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    synchronize(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(args.device)
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_second": args.steps * args.batch / seconds,
                      "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def stratified(labels, limit):
    """Same rule as shallow's --subset stratified: round-robin over classes in file order."""
    by_class = [list(np.flatnonzero(labels == c)) for c in range(10)]
    chosen, i = [], 0
    while len(chosen) < limit:
        for c in range(10):
            if i < len(by_class[c]) and len(chosen) < limit:
                chosen.append(by_class[c][i])
        i += 1
    return np.sort(np.array(chosen))


def evaluate(net, x, y):
    """Loss and accuracy in eval mode, batches of 256, without gradients."""
    net.eval()
    with torch.no_grad():
        loss, correct = 0.0, 0
        for i in range(0, len(y), 256):
            logits = net(x[i:i + 256])
            loss += F.cross_entropy(logits, y[i:i + 256], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + 256]).sum().item()
    net.train()
    return loss / len(y), correct / len(y)


def sweep_bench(args):
    """The loop a researcher would write: for each config, load data, train, evaluate."""
    start = time.perf_counter()
    results = []
    for layers in (2, 4):
        for filters in (8, 16):
            for kernel in (3, 5):
                for layout in ("sequential", "parallel"):
                    d = args.data_dir + "/mnist/"
                    xtr, ytr = read_idx(d + "train-images-idx3-ubyte.gz"), read_idx(d + "train-labels-idx1-ubyte.gz")
                    xte, yte = read_idx(d + "t10k-images-idx3-ubyte.gz"), read_idx(d + "t10k-labels-idx1-ubyte.gz")
                    tr, te = stratified(ytr, 5000), stratified(yte, 1000)
                    xtr = torch.tensor(xtr[tr], dtype=torch.float32, device=args.device).unsqueeze(1) / 255
                    xte = torch.tensor(xte[te], dtype=torch.float32, device=args.device).unsqueeze(1) / 255
                    mean, std = xtr.mean(), xtr.std()
                    xtr, xte = (xtr - mean) / std, (xte - mean) / std
                    ytr_t = torch.tensor(ytr[tr], dtype=torch.long, device=args.device)
                    yte_t = torch.tensor(yte[te], dtype=torch.long, device=args.device)
                    torch.manual_seed(0)
                    net = Net(layout, 1, 28, layers, filters, kernel, True).to(args.device)
                    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
                    perm = torch.randperm(len(ytr_t), device=args.device)
                    for i in range(0, len(perm), 32):
                        idx = perm[i:i + 32]
                        opt.zero_grad()
                        F.cross_entropy(net(xtr[idx]), ytr_t[idx]).backward()
                        opt.step()
                    results.append(evaluate(net, xte, yte_t) + evaluate(net, xtr, ytr_t))
    synchronize(args.device)
    print(json.dumps({"wall_seconds": time.perf_counter() - start, "runs": len(results),
                      "peak_rss_mb": peak_rss_mb()}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("step", help="training-step throughput on synthetic data")
    s.add_argument("--net", choices=NETS, required=True)
    s.add_argument("--layout", choices=["sequential", "parallel"], required=True)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--warmup", type=int, default=20)
    s.add_argument("--threads", type=int, required=True)
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    w = sub.add_parser("sweep", help="16-run mini grid, one config after another")
    w.add_argument("--data-dir", required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    step_bench(args) if args.mode == "step" else sweep_bench(args)


if __name__ == "__main__":
    sys.exit(main())
