"""A net saved by `shallow train --save` as a PyTorch module.

    import shallow_net                     # this file (bench/shallow_net.py)
    net, meta = shallow_net.load("net.safetensors")
    net.eval()
    logits = net(shallow_net.normalise(images, meta))   # images: N×C×H×W, pixel values / 255

The file is safetensors (read here without the `safetensors` package): the variables, and in its
metadata the architecture, the images' normalisation and the run's settings as JSON. The module
computes what `src/model/mod.rs` computes: a k×k stem convolution and activation (then 2×2
max-pooling with pool = max2), L residual units φ(BN(conv_i(h))) arranged in D stages of L/D
units summed side by side (sequential: D = L, parallel: D = 1, staged-D), then flatten or global
average pooling, and a linear layer. Its parameters keep shallow's names and shapes: the L units'
convolutions are one tensor `units.weight` of L·F output channels (unit i: rows i·F … (i+1)·F−1).

    python bench/shallow_net.py check NET OUTPUTS    # OUTPUTS: `shallow eval NET --outputs`
prints the largest difference between this module's logits and shallow's on the same images.
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "shallow-net/1"
DTYPES = {"F32": torch.float32, "I64": torch.int64}


def read_safetensors(path):
    """The tensors of a safetensors file by name, and its metadata."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        raw = bytearray(data[8 + n + start:8 + n + end])
        tensors[name] = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, meta


def stages_of(layout, layers):
    if layout == "sequential":
        return layers
    if layout == "parallel":
        return 1
    return int(layout.removeprefix("staged-"))


class ShallowNet(nn.Module):
    def __init__(self, arch):
        super().__init__()
        channels, height, width = arch["input"]
        L, F_, k = arch["layers"], arch["filters"], arch["kernel"]
        self.filters, self.pool, self.head_kind = F_, arch["pool"], arch["head"]
        self.stages = stages_of(arch["layout"], L)
        self.act = {"relu": torch.relu, "tanh": torch.tanh}[arch["activation"]]
        self.stem = nn.Conv2d(channels, F_, k, padding=k // 2)
        # All units' convolutions as one, as shallow holds them (no bias before batch norm).
        self.units = nn.Conv2d(F_, L * F_, k, padding=k // 2, bias=not arch["batchnorm"])
        if arch["batchnorm"]:
            self.units.bn = nn.BatchNorm2d(L * F_, eps=1e-5, momentum=0.1)
        if self.pool == "max2":
            height, width = height // 2, width // 2
        features = F_ * height * width if self.head_kind == "flatten" else F_
        self.head = nn.Linear(features, arch["classes"])
        self.layers = L

    def unit_group(self, h, first, count):
        rows = slice(first * self.filters, (first + count) * self.filters)
        bias = self.units.bias[rows] if self.units.bias is not None else None
        z = F.conv2d(h, self.units.weight[rows], bias, padding=self.units.padding)
        if hasattr(self.units, "bn"):
            bn = self.units.bn
            z = F.batch_norm(z, bn.running_mean[rows], bn.running_var[rows], bn.weight[rows],
                             bn.bias[rows], self.training, bn.momentum, bn.eps)
        z = self.act(z)
        return z.reshape(z.shape[0], count, self.filters, *z.shape[2:]).sum(dim=1)

    def forward(self, x):
        h = self.act(self.stem(x))
        if self.pool == "max2":
            h = F.max_pool2d(h, 2)
        width = self.layers // self.stages
        for s in range(self.stages):
            h = h + self.unit_group(h, s * width, width)
        features = h.flatten(1) if self.head_kind == "flatten" else h.mean(dim=(2, 3))
        return self.head(features)


def load(path):
    """The net saved at `path` (in eval mode) and its metadata (architecture, normalisation and
    settings, decoded)."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a net saved as {FORMAT} (format: {meta.get('format')})")
    meta = {key: json.loads(meta[key]) for key in ("architecture", "normalisation", "settings")}
    net = ShallowNet(meta["architecture"])
    state = net.state_dict()
    missing = set(state) - set(tensors) - {"units.bn.num_batches_tracked"}
    if missing or set(tensors) - set(state):
        raise ValueError(f"{path}: tensors {sorted(tensors)} do not fit its architecture "
                         f"({sorted(state)})")
    net.load_state_dict(tensors, strict=False)
    return net.eval(), meta


def normalise(images, meta):
    """`images` (N×C×H×W, pixel values / 255) normalised as the net's training images were."""
    mean = torch.tensor(meta["normalisation"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta["normalisation"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (images - mean) / std


def check(net_path, outputs_path):
    net, _ = load(net_path)
    outputs, _ = read_safetensors(outputs_path)
    with torch.no_grad():
        logits = net(outputs["images"])
    diff = (logits - outputs["logits"]).abs().max().item()
    agree = (logits.argmax(1) == outputs["logits"].argmax(1)).float().mean().item()
    print(json.dumps({"images": len(logits), "max_abs_diff": diff, "argmax_agreement": agree}))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "check":
        sys.exit(__doc__)
    check(sys.argv[2], sys.argv[3])
