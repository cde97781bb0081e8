"""PyTorch reference for `shallow bench`: the same model, data shapes, optimizer and training step
in plain PyTorch, as a researcher would write it. Prints one JSON object per measurement.

  python bench/reference.py step --net mnist --layout parallel --threads 2 --steps 40
  python bench/reference.py step --net cifar --layout sequential --threads 2 --steps 400 \
      --device cuda --precision bf16
  python bench/reference.py fused-step --net tiny --layout sequential --members 9 --threads 2
  python bench/reference.py sweep --data-dir ../shared/data --threads 2 [--grid fused]
  python bench/reference.py train --data-dir ../shared/data --layout sequential --seed 3 ...
  python bench/reference.py replay --trace run.trace --data-dir ../shared/data

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
import os
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


ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}


class Net(nn.Module):
    """src/model.rs in plain PyTorch: stem conv k×k + φ (+ 2×2 max-pool), L residual units
    φ(BN?(conv_i(h))) stacked or summed side by side, then flatten (or global average pool) → linear."""

    def __init__(self, layout, channels, side, layers, filters, kernel, pool,
                 activation="relu", batchnorm=False, head="flatten"):
        super().__init__()
        self.layout, self.pool, self.head_kind = layout, pool, head
        self.act = ACTIVATIONS[activation]
        pad = kernel // 2
        self.stem = nn.Conv2d(channels, filters, kernel, padding=pad)
        # No bias before batch norm, whose shift makes it redundant (as in src/model.rs).
        self.units = nn.ModuleList(
            nn.Conv2d(filters, filters, kernel, padding=pad, bias=not batchnorm) for _ in range(layers)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(filters) for _ in range(layers)) if batchnorm else None
        feat = side // 2 if pool else side
        self.head = nn.Linear(filters * feat * feat if head == "flatten" else filters, 10)

    def unit(self, i, h):
        z = self.units[i](h)
        if self.bns is not None:
            z = self.bns[i](z)
        return self.act(z)

    def forward(self, x):
        h = self.act(self.stem(x))
        if self.pool:
            h = F.max_pool2d(h, 2)
        if self.layout == "sequential":
            for i in range(len(self.units)):
                h = h + self.unit(i, h)
        else:
            h = h + sum(self.unit(i, h) for i in range(len(self.units)))
        features = h.flatten(1) if self.head_kind == "flatten" else h.mean(dim=(2, 3))
        return self.head(features)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step, args, images):
    """Runs `step` args.warmup times, then times args.steps more and prints the measurement."""
    for _ in range(args.warmup):
        step()
    synchronize(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(args.device)
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_second": args.steps * images / seconds,
                      "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


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

    timed(step, args, args.batch)


def read_idx(path):
    """An IDX file, gzipped or not (as shallow's reader: by the gzip magic bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_split(data_dir, dataset, train):
    """Images (uint8, NCHW) and labels of a dataset's training or test split, from the official files."""
    if dataset == "cifar10":
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        raw = np.concatenate([np.fromfile(os.path.join(data_dir, "cifar-10-batches-bin", n), np.uint8)
                              for n in names]).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0]
    prefix = "train" if train else "t10k"

    def find(stem):
        path = os.path.join(data_dir, dataset, stem)
        return path + ".gz" if os.path.isfile(path + ".gz") else path

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    return images[:, None], read_idx(find(f"{prefix}-labels-idx1-ubyte"))


def stratified(labels, limit):
    """Same rule as shallow's --subset stratified: round-robin over classes in file order."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    by_class = [list(np.flatnonzero(labels == c)) for c in range(10)]
    chosen, i = [], 0
    while len(chosen) < limit:
        for c in range(10):
            if i < len(by_class[c]) and len(chosen) < limit:
                chosen.append(by_class[c][i])
        i += 1
    return np.sort(np.array(chosen))


def load_data(data_dir, dataset, train_limit, val_limit, subset, device="cpu"):
    """shallow's data::prepare: the subsets, images in [0, 1] normalised per channel with the mean
    and (population) standard deviation of the selected training images."""
    def select(train, limit):
        images, labels = read_split(data_dir, dataset, train)
        keep = stratified(labels, limit) if subset == "stratified" else np.arange(len(labels))[:limit]
        x = torch.tensor(images[keep], dtype=torch.float32) / 255
        return x, torch.tensor(labels[keep], dtype=torch.long)

    train_x, train_y = select(True, train_limit)
    val_x, val_y = select(False, val_limit)
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True, correction=0)
    return {"train_x": ((train_x - mean) / std).to(device), "train_y": train_y.to(device),
            "val_x": ((val_x - mean) / std).to(device), "val_y": val_y.to(device)}


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


def fused_step_bench(args):
    """PyTorch's own way to train an array of same-shaped models: torch.func.stack_module_state +
    vmap over functional_call, one Adam over the stacked parameters; each member its own batch."""
    from torch.func import functional_call, stack_module_state
    c, side, layers, filters, kernel, pool = NETS[args.net]
    torch.manual_seed(0)
    m, b = args.members, args.batch
    models = [Net(args.layout, c, side, layers, filters, kernel, pool).to(args.device) for _ in range(m)]
    params, buffers = stack_module_state(models)
    base = Net(args.layout, c, side, layers, filters, kernel, pool).to("meta")
    ensemble = torch.vmap(lambda p, bufs, x: functional_call(base, (p, bufs), (x,)))
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    x = torch.randn(m, b, c, side, side, device=args.device)
    y = torch.randint(0, 10, (m * b,), device=args.device)

    def step():
        opt.zero_grad()
        logits = ensemble(params, buffers, x).reshape(m * b, 10)
        F.cross_entropy(logits, y, reduction="none").view(m, b).mean(1).sum().backward()
        opt.step()

    timed(step, args, b * m)


# The sweep benchmarks' grids: (layout, layers, filters, kernel, lr, seed) of configs/bench-sweep.toml
# and configs/bench-sweep-fused.toml, in their order.
SWEEP_GRIDS = {
    "mini": [(layout, layers, filters, kernel, 1e-3, 0)
             for layers in (2, 4) for filters in (8, 16) for kernel in (3, 5)
             for layout in ("sequential", "parallel")],
    "fused": [(layout, 2, 8, 3, lr, seed)
              for seed in (0, 1, 2) for lr in (1e-3, 2e-3, 3e-3)
              for layout in ("sequential", "parallel")],
}


def sweep_bench(args):
    """The loop a researcher would write: for each config, load data, train, evaluate."""
    start = time.perf_counter()
    results = []
    for layout, layers, filters, kernel, lr, seed in SWEEP_GRIDS[args.grid]:
        d = load_data(args.data_dir, "mnist", 5000, 1000, "stratified", args.device)
        torch.manual_seed(seed)
        net = Net(layout, 1, 28, layers, filters, kernel, True).to(args.device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        perm = torch.randperm(len(d["train_y"]), device=args.device)
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            F.cross_entropy(net(d["train_x"][idx]), d["train_y"][idx]).backward()
            opt.step()
        results.append(evaluate(net, d["val_x"], d["val_y"]) + evaluate(net, d["train_x"], d["train_y"]))
    synchronize(args.device)
    print(json.dumps({"wall_seconds": time.perf_counter() - start, "runs": len(results),
                      "peak_rss_mb": peak_rss_mb()}))


def build(cfg, shape):
    """The net of a shallow run config (a dict as in shallow's --json) for inputs of `shape` [C, H, W]."""
    return Net(cfg["layout"], shape[0], shape[1], cfg["layers"], cfg["filters"], cfg["kernel"],
               cfg["pool"] == "max2", cfg["activation"], cfg["batchnorm"], cfg["head"])


def fused(net):
    """The net's tensors under shallow's variable names: the L unit convolutions (and batch norms)
    concatenated along the output channels, as shallow holds them in one [L·F, F, k, k] tensor."""
    cat = lambda ts: torch.cat(list(ts), 0)
    named = {"stem.weight": [net.stem.weight], "stem.bias": [net.stem.bias],
             "units.weight": [u.weight for u in net.units],
             "head.weight": [net.head.weight], "head.bias": [net.head.bias]}
    if net.bns is None:
        named["units.bias"] = [u.bias for u in net.units]
    else:
        for name in ("weight", "bias", "running_mean", "running_var"):
            named[f"units.bn.{name}"] = [getattr(bn, name) for bn in net.bns]
    return {name: (parts, cat(parts)) for name, parts in named.items()}


def load_initial(net, arrays):
    """Copies shallow's initial variables (trace.npz, `init.<name>`) into the net."""
    with torch.no_grad():
        for name, (parts, _) in fused(net).items():
            values = torch.from_numpy(arrays[f"init.{name}"]).chunk(len(parts), 0)
            for p, v in zip(parts, values):
                p.copy_(v.reshape(p.shape))


def make_optimizer(net, cfg):
    """torch.optim's optimizer for a shallow run config (keys absent from the config take
    shallow's defaults, which are PyTorch's)."""
    name, lr = cfg.get("optimizer", "adam"), cfg["lr"]
    default_wd = 0.01 if name == "adamw" else 0.0
    wd = cfg.get("weight_decay")
    wd = default_wd if wd is None else wd
    if name == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.get("momentum", 0.0),
                               nesterov=cfg.get("nesterov", False), weight_decay=wd)
    if name == "lbfgs":
        line_search = {"strong-wolfe": "strong_wolfe", "none": None}[cfg.get("line_search", "strong-wolfe")]
        return torch.optim.LBFGS(net.parameters(), lr=lr, max_iter=cfg.get("lbfgs_iterations", 20),
                                 history_size=cfg.get("lbfgs_history", 100), line_search_fn=line_search)
    raise ValueError(f"unknown optimizer {name}")


class Schedule:
    """torch.optim.lr_scheduler for a shallow run config, stepped once per epoch: LinearLR warm-up
    then CosineAnnealingLR or StepLR (joined by SequentialLR), or ReduceLROnPlateau on the
    held-out loss after the warm-up."""

    def __init__(self, opt, cfg):
        sched, warmup = cfg.get("schedule", "constant"), cfg.get("warmup", 0)
        factor = cfg.get("lr_factor", 0.1)
        lr_sched = torch.optim.lr_scheduler
        main = {
            "cosine": lambda: lr_sched.CosineAnnealingLR(opt, T_max=max(cfg["epochs"] - warmup, 1)),
            "step": lambda: lr_sched.StepLR(opt, step_size=cfg.get("lr_step", 10), gamma=factor),
        }.get(sched, lambda: None)()
        warm = lr_sched.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0,
                                 total_iters=warmup) if warmup else None
        self.warmup, self.epoch = warmup, 0
        if warm and main:
            self.stepper = lr_sched.SequentialLR(opt, [warm, main], milestones=[warmup])
        else:
            self.stepper = warm or main
        self.plateau = lr_sched.ReduceLROnPlateau(
            opt, mode="min", factor=factor, patience=cfg.get("lr_patience", 5), threshold=1e-4
        ) if sched == "plateau" else None

    def step(self, holdout_loss):
        self.epoch += 1
        if self.plateau is not None and self.epoch > self.warmup:
            self.plateau.step(holdout_loss)
        elif self.stepper is not None and (self.plateau is None or self.epoch <= self.warmup):
            self.stepper.step()


class Monitor:
    """shallow's stopping rules (train/stopping.rs): the best held-out epoch, and whether the rule
    (plateau: no relative improvement above min_delta for patience epochs; target: loss at most
    target_loss) ends the run."""

    def __init__(self, cfg):
        self.rule, self.patience = cfg.get("stop", "none"), cfg.get("patience", 10)
        self.min_delta, self.target = cfg.get("min_delta", 1e-4), cfg.get("target_loss")
        self.reference, self.since, self.best, self.stop_reason = float("inf"), 0, None, None

    def observe(self, epoch, loss):
        if loss < self.reference * (1 - self.min_delta):
            self.reference, self.since = loss, 0
        else:
            self.since += 1
        best = self.best is None or loss < self.best[1]
        if best:
            self.best = (epoch, loss)
        if self.rule == "plateau" and self.since >= self.patience:
            self.stop_reason = "plateau"
        elif self.rule == "target" and loss <= self.target:
            self.stop_reason = "target"
        return best


def fit(net, cfg, data, order_of_epoch, on_step=None):
    """The optimizer and schedule of `cfg` on softmax cross-entropy, one pass per epoch in the given
    example orders, validation (and held-out evaluation) after each, the stopping rule with the
    best held-out epoch's weights restored, then the final evaluation: shallow's train::train."""
    opt = make_optimizer(net, cfg)
    schedule, monitor = Schedule(opt, cfg), Monitor(cfg)
    holdout = (data["holdout_x"], data["holdout_y"]) if "holdout_x" in data else None
    batch, n = cfg["batch_size"], len(data["train_y"])
    epochs, best_state = [], None
    for epoch in range(1, cfg["epochs"] + 1):
        order = order_of_epoch(epoch)
        net.train()
        for step, start in enumerate(range(0, n, batch)):
            idx = order[start:start + batch]
            x, y = data["train_x"][idx], data["train_y"][idx]

            def closure():
                opt.zero_grad()
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                return loss

            loss = opt.step(closure) if isinstance(opt, torch.optim.LBFGS) else None
            if loss is None:
                loss = closure()
                opt.step()
            if on_step:
                on_step(epoch, step, loss.item())
        val = evaluate(net, data["val_x"], data["val_y"])
        held = evaluate(net, *holdout) if holdout else None
        epochs.append(val + (held or ()))
        schedule.step(held[0] if held else None)
        if held and monitor.observe(epoch, held[0]) and monitor.rule != "none":
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if monitor.stop_reason:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    train_loss, train_acc = evaluate(net, data["train_x"], data["train_y"])
    val_loss, val_acc = evaluate(net, data["val_x"], data["val_y"])
    out = {"epochs": epochs, "final_train_loss": train_loss, "final_train_acc": train_acc,
           "final_val_loss": val_loss, "final_val_acc": val_acc}
    if holdout:
        out["convergence"] = {"stop_reason": monitor.stop_reason or "cap", "best_epoch": monitor.best[0]}
    return out


def train_mode(args):
    """One run of shallow's protocol in plain PyTorch: PyTorch's own initialisation
    (torch.manual_seed) and shuffles (torch.randperm), unless taken from a shallow trace."""
    cfg = {"layout": args.layout, "layers": args.layers, "filters": args.filters, "kernel": args.kernel,
           "pool": args.pool, "activation": args.activation, "batchnorm": args.batchnorm,
           "head": args.head, "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs}
    data = load_data(args.data_dir, args.dataset, args.train_limit, args.val_limit, args.subset)
    torch.manual_seed(args.seed)
    net = build(cfg, data["train_x"].shape[1:])
    if args.init_from:
        load_initial(net, np.load(os.path.join(args.init_from, "trace.npz")))
    if args.order_from:
        orders = np.load(os.path.join(args.order_from, "trace.npz"))
        order_of_epoch = lambda e: torch.from_numpy(orders[f"order.{e}"])
    else:
        g = torch.Generator().manual_seed(args.seed)
        order_of_epoch = lambda e: torch.randperm(len(data["train_y"]), generator=g)
    print(json.dumps({"seed": args.seed, **fit(net, cfg, data, order_of_epoch)}))


# Replay tolerances, relative (losses to max(1, |loss|), variable checksums to the tensor's norm).
# shallow and PyTorch run the same libtorch kernels, but shallow applies the parallel units as one
# convolution with L·F output channels and PyTorch as L convolutions, so results differ by
# rounding. Measured over the fidelity test's 8 runs (1 epoch, 19 steps, lr 3e-4, one thread on
# both sides): ≤ 2.1e-7 on losses and ≤ 1.9e-7 on checksums. Without batch norm 1e-6 leaves 5×
# room and still catches an Adam ε of 1e-7 instead of 1e-8 (3e-6 on the MNIST net's losses).
# Batch norm amplifies rounding (Adam divides by the root of the squared gradient, so a shift
# whose gradient is near zero moves by up to ±lr on rounding noise alone): 1e-5 there; a wrong
# batch-norm momentum (0.11 for 0.1) fails at the first step (running mean 1e-1 off). Replay with
# the traced run's thread count: another count changes summation orders, which batch norm then
# amplifies to ~1e-4.
TOLERANCES = {"plain": (1e-6, 1e-6), "batchnorm": (1e-5, 1e-5)}


class Mismatch(Exception):
    pass


def check(what, ours, theirs, scale, rtol):
    if not abs(ours - theirs) <= rtol * scale:
        raise Mismatch(f"{what}: shallow {theirs!r}, PyTorch {ours!r} (difference "
                       f"{abs(ours - theirs):.3g} > {rtol:g} × scale {scale:.3g})")
    return abs(ours - theirs) / scale


def replay_mode(args):
    """Replays every trace given (in one process: importing torch and its optimizers' compiler
    hooks costs seconds), printing one JSON line each. Exit 1 if any parts from PyTorch."""
    return max(replay_trace(trace, args.data_dir) for trace in args.trace)


def replay_trace(folder, data_dir):
    """Trains a shallow trace's run in PyTorch from its initial weights and batch order, checking
    every step's loss and every variable after every update; names the first step and tensor
    where the two part. 1 on a mismatch, else 0."""
    with open(os.path.join(folder, "trace.json")) as f:
        trace = json.load(f)
    arrays = np.load(os.path.join(folder, "trace.npz"))
    result, records = trace["result"], iter(trace["steps"])
    cfg = result["config"]
    data = {k: torch.from_numpy(arrays[k]) for k in ("train_x", "train_y", "val_x", "val_y", "holdout_x",
                                                      "holdout_y") if k in arrays}
    worst = {"loss": 0.0, "checksum": 0.0}
    loss_rtol, checksum_rtol = TOLERANCES["batchnorm" if cfg["batchnorm"] else "plain"]
    try:
        # PyTorch's own loading of the same subset must give the same tensors (a held-out split is
        # drawn with shallow's ChaCha8 stream, which this script does not reproduce: then the
        # traced tensors are used as they are).
        if data_dir and cfg.get("holdout") is None:
            own = load_data(data_dir, cfg["dataset"], cfg["train_limit"], cfg["val_limit"], cfg["subset"])
            for k, t in data.items():
                if own[k].shape != t.shape or (own[k].double() - t.double()).abs().max() > 1e-5:
                    raise Mismatch(f"data: {k} loaded by PyTorch differs from shallow's")
        net = build(cfg, data["train_x"].shape[1:])
        load_initial(net, arrays)

        def on_step(epoch, step, loss):
            rec = next(records)
            where = f"epoch {epoch} step {step}"
            worst["loss"] = max(worst["loss"], check(f"{where}: loss", loss, rec["loss"], max(1.0, abs(rec["loss"])), loss_rtol))
            with torch.no_grad():
                for name, (_, t) in fused(net).items():
                    t = t.double()
                    s, norm = rec["checksums"][name]
                    scale = max(norm, 1e-12)
                    worst["checksum"] = max(
                        worst["checksum"],
                        check(f"{where}: {name} (norm)", t.norm().item(), norm, scale, checksum_rtol),
                        check(f"{where}: {name} (sum)", t.sum().item(), s, scale * t.numel() ** 0.5, checksum_rtol))

        out = fit(net, cfg, data, lambda e: torch.from_numpy(arrays[f"order.{e}"]), on_step)
        if len(out["epochs"]) != len(result["epochs"]):
            raise Mismatch(f"epochs trained: shallow {len(result['epochs'])}, PyTorch {len(out['epochs'])}")
        for epoch, theirs in zip(result["epochs"], out["epochs"]):
            val_loss = theirs[0]
            check(f"epoch {epoch['epoch']}: validation loss", val_loss, epoch["val_loss"], max(1.0, val_loss), loss_rtol)
            if len(theirs) > 2:
                check(f"epoch {epoch['epoch']}: held-out loss", theirs[2], epoch["holdout_loss"],
                      max(1.0, theirs[2]), loss_rtol)
        if "convergence" in out:
            for key in ("stop_reason", "best_epoch"):
                if out["convergence"][key] != result["convergence"][key]:
                    raise Mismatch(f"{key}: shallow {result['convergence'][key]!r}, PyTorch "
                                   f"{out['convergence'][key]!r}")
        for key in ("final_train_loss", "final_val_loss"):
            check(key, out[key], result[key], max(1.0, out[key]), loss_rtol)
        for key, n in (("final_train_acc", len(data["train_y"])), ("final_val_acc", len(data["val_y"]))):
            check(key, out[key], result[key], 1.0, 2.0 / n)  # one or two borderline examples may flip
    except Mismatch as e:
        print(json.dumps({"match": False, "first_mismatch": str(e)}))
        return 1
    print(json.dumps({"match": True, "steps": len(trace["steps"]), "epochs": len(trace["result"]["epochs"]),
                      "max_loss_rel_diff": worst["loss"],
                      "max_checksum_rel_diff": worst["checksum"]}))
    return 0


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
    f = sub.add_parser("fused-step", help="training-step throughput of a vmap ensemble of M nets")
    f.add_argument("--net", choices=NETS, required=True)
    f.add_argument("--layout", choices=["sequential", "parallel"], required=True)
    f.add_argument("--members", type=int, required=True)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--steps", type=int, default=30)
    f.add_argument("--warmup", type=int, default=20)
    f.add_argument("--threads", type=int, required=True)
    f.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    f.add_argument("--precision", choices=["fp32"], default="fp32")
    w = sub.add_parser("sweep", help="a sweep benchmark's grid, one config after another")
    w.add_argument("--grid", choices=SWEEP_GRIDS, default="mini",
                   help="mini: configs/bench-sweep.toml; fused: configs/bench-sweep-fused.toml")
    w.add_argument("--data-dir", required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t = sub.add_parser("train", help="one run of shallow's training protocol, PyTorch's own RNG")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--dataset", default="mnist")
    t.add_argument("--layout", choices=["sequential", "parallel"], required=True)
    for name, default in (("layers", 4), ("filters", 32), ("kernel", 3), ("batch-size", 32),
                          ("epochs", 1), ("seed", 0)):
        t.add_argument(f"--{name}", type=int, default=default)
    t.add_argument("--train-limit", type=int)
    t.add_argument("--val-limit", type=int)
    t.add_argument("--subset", choices=["stratified", "first"], default="stratified")
    t.add_argument("--activation", choices=list(ACTIVATIONS), default="relu")
    t.add_argument("--pool", choices=["none", "max2"], default="none")
    t.add_argument("--head", choices=["flatten", "gap"], default="flatten")
    t.add_argument("--batchnorm", action="store_true")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--init-from", metavar="TRACE", help="initial weights from a shallow trace folder")
    t.add_argument("--order-from", metavar="TRACE", help="example order from a shallow trace folder")
    t.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("replay", help="train a `shallow train --trace` run in PyTorch, compare step by step")
    r.add_argument("--trace", required=True, action="append",
                   help="folder written by `shallow train --trace` (repeat to replay several in one process)")
    r.add_argument("--data-dir", help="also check that PyTorch loads the same data from here")
    r.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if getattr(args, "device", "cpu") == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = {"step": step_bench, "fused-step": fused_step_bench, "sweep": sweep_bench, "train": train_mode, "replay": replay_mode}
    return modes[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
