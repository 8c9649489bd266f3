#!/usr/bin/env bash
# The GPU measurements, side by side in one run (~8 min on one H100; docs/optimizer.md has the output):
#   1. step overhead of HessianLRAdaptation vs Adam foreach / fused, 10.5M and 100.7M parameters,
#      every path (default = measured fastest, compiled, eager)       benchmarks/step_overhead.py
#   2. cifar10-resnet18 and shakespeare-char-gpt: a training run through hessian-lr vs the same model,
#      data and optimizer in a plain PyTorch loop (synthetic data of the real formats when the data
#      are absent: said in the output)                                  benchmarks/gpu_training.py
#   3. the stacked engine on mnist1d-mlp, K = 10 and K = 100 vs one model at a time
#                                                                       benchmarks/gpu_stacked.py
# Needs only the repository and its venv (no network). Without a CUDA device: one line, exit 1.
#
#   benchmarks/gpu.sh [--device cuda|cuda:N] [--data-dir D]
#   benchmarks/gpu.sh --device cpu      # the same scripts at tiny sizes: a check that they run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEVICE=cuda
DATA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
        --data-dir) DATA=(--data-dir "${2:?--data-dir needs a value}"); shift 2 ;;
        *) echo "gpu.sh: error: unknown argument '$1' (use --device D, --data-dir D)" >&2; exit 2 ;;
    esac
done

"$PY" benchmarks/gpu_common.py --device "$DEVICE"  # names the machine; one line and exit 1 when absent
start=$SECONDS
if [ "${DEVICE%%:*}" = cpu ]; then
    OVERHEAD=(--models a c --repeats 5 --threads 1)
    TRAINING=(--tiny)
    STACKED=(--k 2 4 --epochs 1 --sequential 1)
else
    OVERHEAD=(--models b d --repeats 30)
    TRAINING=(--steps 200)
    STACKED=(--k 10 100 --epochs 3 --sequential 3)
fi
echo
echo "== 1. step overhead of the wrapper (benchmarks/step_overhead.py)"
"$PY" benchmarks/step_overhead.py --device "$DEVICE" "${OVERHEAD[@]}"
echo
echo "== 2. a training run through hessian-lr vs a plain PyTorch loop (benchmarks/gpu_training.py)"
"$PY" benchmarks/gpu_training.py --device "$DEVICE" "${TRAINING[@]}" "${DATA[@]}"
echo
echo "== 3. the stacked engine vs one model at a time (benchmarks/gpu_stacked.py)"
"$PY" benchmarks/gpu_stacked.py --device "$DEVICE" "${STACKED[@]}"
echo
echo "gpu.sh: done in $((SECONDS - start)) s"
