#!/usr/bin/env bash
# Installs libtorch for `shallow` into ./.venv (a Python virtual environment holding the PyTorch
# wheel) and links .venv/libtorch to the wheel's `torch` folder, which .cargo/config.toml points
# tch at. Idempotent: a second run only checks.
#
#   SHALLOW_TORCH_FULL=1 scripts/setup.sh   also installs torch's CUDA dependencies (for GPUs and
#                                           for bench/reference.py, whose `import torch` needs them)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
# libtorch_cpu.so links these two CUDA runtime libraries even on CPU-only machines.
CPU_DEPS=(nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# (read the whole output: `pip show | grep -q` would fail under pipefail when grep exits early)
installed=$(.venv/bin/python -m pip show torch 2>/dev/null | sed -n "s/^Version: //p" || true)
if [ "${installed%%+*}" != "$TORCH_VERSION" ]; then
  echo "installing torch==${TORCH_VERSION} into .venv (about 1.2 GB) ..."
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    "torch==${TORCH_VERSION}" "${CPU_DEPS[@]}"
fi
if [ "${SHALLOW_TORCH_FULL:-0}" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION}" numpy
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$site/torch" .venv/libtorch
test -f .venv/libtorch/lib/libtorch_cpu.so
echo "libtorch ready: .venv/libtorch -> $site/torch"
