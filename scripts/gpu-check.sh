#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script: the CUDA tests (tests/it/cuda.rs), one MNIST
# training per layout with --device cuda, the benchmark on the GPU in fp32 and bf16 (with its
# fused section), the paper grid's time estimate unfused and fused, and the quick grid trained
# unfused and fused (runs/hour).
#
#   SHALLOW_DATA=../shared/data scripts/gpu-check.sh [OUT_DIR]      (default: gpu-check/)
#
# Builds with cargo unless SHALLOW_BIN and SHALLOW_CUDA_TESTS name prebuilt binaries (for a GPU
# machine without a Rust toolchain); SHALLOW_PYTHON is the Python with torch for the reference
# (default .venv/bin/python); REPS the bench repetitions (default 2). Every step's output is also
# written to OUT_DIR, so a run cut short still leaves what it measured.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
: "${SHALLOW_DATA:?set SHALLOW_DATA to the folder holding mnist/}"
export SHALLOW_DATA
if [ -z "${SHALLOW_BIN:-}" ]; then
    cargo build --release || exit 1
    cargo test --release --no-run --test it || exit 1
fi
bin=${SHALLOW_BIN:-target/release/shallow}
tests=${SHALLOW_CUDA_TESTS:-$(ls -t target/release/deps/it-* | grep -v '\.d$' | head -n 1)}
python=${SHALLOW_PYTHON:-.venv/bin/python}
status=0
step() { # name, command...: runs the command, tees its output to $out/name.txt, keeps going
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt" || { status=1; echo "== $name FAILED"; }
}
step gpu nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
step cuda-tests "$tests" cuda:: --ignored --test-threads 1
for layout in sequential parallel; do
    step "train-$layout" "$bin" train --device cuda --offline --layout "$layout" --epochs 1 \
        --json "$out/train-$layout.json"
done
for fuse in 1 auto; do
    step "dry-run-paper-fuse-$fuse" "$bin" sweep configs/paper.toml --dry-run --device cuda \
        --fuse "$fuse"
    step "quick-fuse-$fuse" bash -c "time '$bin' sweep configs/quick.toml --db '$out/quick-$fuse.db' \
        --device cuda --offline --workers 1 --fuse $fuse"
done
step bench "$bin" bench --device cuda --precision fp32,bf16 --repetitions "${REPS:-2}" \
    --python "$python"
exit $status
