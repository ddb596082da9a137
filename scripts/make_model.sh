#!/usr/bin/env bash
# `make model`: rebuild the default bundle from scratch: the real dataset (make data), training
# with training/configs/default_cpu.yaml on this CPU (about 25 minutes on 2 cores), export with
# the transformer-optimised graphs (--optimize: fused attention / FastGelu) and MatMul-only
# per-channel int8 variants of them (--int8 matmul; the text tower ships this one: checked one
# text at a time, as the engine runs it, its min cosine to fp32 on the 225 test texts is 0.990
# against 0.960 for whole-graph dynamic int8, at the same speed and R@10 within noise),
# evaluation, the int8 retrieval check on the held-out split, and assembly into
# resources/models/default (<= 50 MB).
# The aerial tower ships as its fused fp32 graph with the weights STORED as fp16 (each big
# initializer is a Cast that onnxruntime folds at load, so it computes in fp32): its int8 variants
# quantise activations with one scale per batch (DynamicQuantizeLinear), which made a tile's
# embedding depend on the tiles sharing its batch and broke extent invariance. The fp32 graph
# alone would not fit the 50 MB cap (50.7 MB); the engine runs the dynamic-int8 text tower one
# text at a time for the same reason.
# On a GPU machine use scripts/train_gpu.sh with the small config instead (see docs/MODEL_CARD.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data-cache/dataset}
WORK=${WORK:-out/default_train}
STEPS=${STEPS:-500}
THREADS=${THREADS:-$(nproc)}
[ -f "$DATA/samples.parquet" ] || bash scripts/make_data.sh "$DATA"
start=$(date +%s)
$PY -m training.train --config training/configs/default_cpu.yaml --out "$WORK" \
  --set "data.source=$DATA" --set "steps=$STEPS" --threads "$THREADS"
$PY -m training.export --checkpoint "$WORK/checkpoint.pt" --out "$WORK/bundle" --optimize \
  --int8 matmul
$PY -m training.evaluate --checkpoint "$WORK/checkpoint.pt" --out "$WORK/eval" || true
mkdir -p "$WORK/eval"
$PY scripts/eval_quantisation.py --checkpoint "$WORK/checkpoint.pt" --bundle "$WORK/bundle" \
  --split test | tee "$WORK/eval/quantisation.md" || true
$PY -m training.weight_storage --bundle "$WORK/bundle" --tower aerial
$PY scripts/ship_bundle.py --bundle "$WORK/bundle" --dataset "$DATA" \
  --out resources/models/default --int8 text \
  --description "Interim UniGeoCLIP default bundle: default_cpu config, $STEPS steps on a CPU, trained on the real multi-site dataset from make data. See docs/MODEL_CARD.md."
$PY -m engine info resources/models/default
echo "make model: done in $(( $(date +%s) - start )) s"
