#!/usr/bin/env bash
# Train the `small` UniGeoCLIP config for a few minutes on one GPU, report samples/s and MFU,
# evaluate on the held-out split, and export the model bundle.
#
#   scripts/train_gpu.sh OUT_DIR [DATA] [STEPS] [--set KEY=VALUE ...]
#     OUT_DIR  gets train/ (checkpoint.pt, metrics.csv, curves.png, perf.json, eval.*) and bundle/
#     DATA     "toy" (default) or a dataset folder built by `python -m training.data`
#     STEPS    optimiser steps (default 600: a few minutes of bf16 on an H100/H200)
#     --set    further config overrides, passed to training.train
# Environment: PY (python, default .venv/bin/python), PEAK_TFLOPS (per-GPU dense bf16 peak used
# for MFU, default 989 = H100/H200 datasheet), NPROC (GPUs for torchrun, default 1),
# CONFIG (default small), DEVICE (default cuda; "cpu" runs the same steps on the CPU, which only
# checks the script itself: its perf.json then measures the CPU against PEAK_TFLOPS).
set -euo pipefail

OUT=${1:?usage: scripts/train_gpu.sh OUT_DIR [DATA] [STEPS] [--set KEY=VALUE ...]}
DATA=${2:-toy}
STEPS=${3:-600}
shift $(( $# < 3 ? $# : 3 ))
PY=${PY:-.venv/bin/python}
PEAK=${PEAK_TFLOPS:-989}
NPROC=${NPROC:-1}
CONFIG=${CONFIG:-small}
DEVICE=${DEVICE:-cuda}
OUT=$(realpath -m "$OUT")
cd "$(dirname "$0")/.."

if [ "$DEVICE" = cuda ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA GPU visible to torch: use 'python -m training.train --config tiny' on CPU" >&2
    exit 2
  fi
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
fi

WARM=$(( STEPS / 10 > 20 ? STEPS / 10 : 20 ))
ARGS=(--config "$CONFIG" --out "$OUT/train" --peak-tflops "$PEAK" --eval
      --set "steps=$STEPS" --set "data.source=$DATA" --set "optim.warmup_steps=$WARM"
      --set "ckpt_every=$STEPS" --set "device=$DEVICE" "$@")
if [ "$NPROC" -gt 1 ]; then
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m training.train "${ARGS[@]}"
else
  "$PY" -m training.train "${ARGS[@]}"
fi

"$PY" -m training.export --checkpoint "$OUT/train/checkpoint.pt" --out "$OUT/bundle" --int8 --fp16

echo "== performance ($OUT/train/perf.json)"
cat "$OUT/train/perf.json"
echo "== held-out evaluation ($OUT/train/eval.md)"
head -n 30 "$OUT/train/eval.md"
echo "== bundle: $OUT/bundle"
ls -l "$OUT/bundle"
