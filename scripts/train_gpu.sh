#!/usr/bin/env bash
# Train on one GPU, evaluate, and export the model bundle.
#
#   scripts/train_gpu.sh OUT_DIR [DATA] [STEPS] [--set KEY=VALUE ...]
#     OUT_DIR  gets train/ (checkpoints, metrics) and bundle/
#     DATA     a dataset folder built by `python -m training.data` ("toy" for end-to-end configs;
#              default: the config's data.source, or "toy")
#     STEPS    optimiser steps of stage 1 / of the run (default: the config's, 600 for `small`)
#     --set    further config overrides
# Environment: PY (python, default .venv/bin/python), CONFIG (default lit_gpu; small when DATA
# is "toy"), DEVICE (default
# cuda; "cpu" runs the same code on the CPU, which only checks the script itself), NPROC (GPUs
# for torchrun, end-to-end configs only), PEAK_TFLOPS (per-GPU dense bf16 peak for MFU, default
# 989 = H100/H200 datasheet; end-to-end configs).
#
# A config whose aerial tower is the pretrained EfficientNet (`kind: effnet`, e.g. lit_gpu) runs
# the locked-image stages of training.locked: the feature cache is built with torch on the GPU,
# then stage 1 and stage 2 train on it (both resume from OUT_DIR/train/stage<k>.pt). Other
# configs (tiny, small, base) train end to end with training.train (DDP, bf16, MFU report).
set -euo pipefail

OUT=${1:?usage: scripts/train_gpu.sh OUT_DIR [DATA] [STEPS] [--set KEY=VALUE ...]}
DATA=${2:-}
STEPS=${3:-}
shift $(( $# < 3 ? $# : 3 ))
PY=${PY:-.venv/bin/python}
PEAK=${PEAK_TFLOPS:-989}
NPROC=${NPROC:-1}
# the toy world only feeds end-to-end configs: `train_gpu.sh OUT toy` keeps meaning `small`
if [ "$DATA" = toy ]; then CONFIG=${CONFIG:-small}; else CONFIG=${CONFIG:-lit_gpu}; fi
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

TRAINER=$("$PY" -c "import sys; from training.config import load_config; \
c = load_config(sys.argv[1]); print('locked' if c.model.aerial.kind == 'effnet' else 'train')" \
  "$CONFIG")

if [ "$TRAINER" = locked ]; then
  ARGS=(--config "$CONFIG" --out "$OUT/train" --set "device=$DEVICE" "$@")
  [ -n "$DATA" ] && ARGS+=(--set "data.source=$DATA")
  [ -n "$STEPS" ] && ARGS+=(--set "steps=$STEPS")
  start=$(date +%s)
  "$PY" -m training.locked "${ARGS[@]}"
  echo "== locked-image training: $(( $(date +%s) - start )) s (cache + stages)"
  "$PY" -m training.export --checkpoint "$OUT/train/checkpoint.pt" --out "$OUT/bundle"
else
  DATA=${DATA:-toy}
  STEPS=${STEPS:-600}
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
fi

echo "== bundle: $OUT/bundle"
ls -l "$OUT/bundle"
