#!/usr/bin/env bash
# The full-size checks of bench/bench_fullsize.py on a CUDA GPU, in half precision: SD 1.5 at 512 px and SDXL at
# 1024 px (random weights of the real architectures, built once into the Likeness cache), a 2-step LoRA job each
# through the trainer service and a 2-step generation through the inference service. Writes the figures
# (step time, the worker's peak GPU memory as nvidia-smi reports it, the memory plan's error, generation time) to
# $OUT (default bench/gpu_results.json) and prints them. See docs/models.md, "Checking a GPU node".
#
#   bash bench/gpu_check.sh                       # bf16 where the GPU supports it, else fp16
#   PRECISION=fp16 ONLY=sd15 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench/gpu_results.json}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: nvidia-smi not found: run this on a node with an NVIDIA GPU and its driver" >&2
  exit 2
fi
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: torch sees no CUDA device; install the CUDA build of torch (make setup does on a GPU node)" >&2
  exit 2
fi
PRECISION=${PRECISION:-$("$PY" -c 'import torch; print("bf16" if torch.cuda.is_bf16_supported() else "fp16")')}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
args=(--device cuda --precision "$PRECISION" --out "$OUT")
if [[ -n "${ONLY:-}" ]]; then args+=(--only "$ONLY"); fi
"$PY" bench/bench_fullsize.py "${args[@]}"
echo "gpu_check: figures written to $OUT"
