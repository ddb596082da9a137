#!/usr/bin/env bash
# `make model`: rebuild the default bundle on this CPU (about 45-60 minutes on 2 cores):
#  1. the locked-image stages of training.locked with training/configs/lit_cpu.yaml: a feature
#     cache of the frozen EfficientNet-Lite0 / MiniLM (built once per data + weights, reused by a
#     rebuild), stage 1 on the cache, stage 2 fine-tuning the aerial backbone's last blocks;
#  2. export (--optimize fuses the text tower's attention; --int8 text=embedding quantises only
#     MiniLM's word-embedding table, weight-only), then the aerial, street and text towers'
#     weights stored as fp16 (training.weight_storage: cast back to fp32 at load, min cosine
#     0.9999, batch-independent): 55 MB in all;
#  3. the held-out targets of training.targets_run, scored through the engine for the new bundle
#     and the previous default side by side (areas never trained on: HOLDOUT);
#  4. scripts/ship_bundle.py: bundle.json with the measured zero-shot accuracy, assembled into
#     resources/models/default (<= 60 MB).
# On a GPU machine use scripts/train_gpu.sh (CONFIG=lit_gpu) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data-cache/dataset_v2}
WORK=${WORK:-out/default_train}
CONFIG=${CONFIG:-lit_cpu}
HOLDOUT=${HOLDOUT:-havel_s2 sfbay_l7}
# One torch thread: on this shared 2-core machine a 2-thread step spin-waited 10x slower
# under load than a 1-thread one (same losses); set THREADS=2 on an idle machine.
THREADS=${THREADS:-1}
OUT_BUNDLE=${OUT_BUNDLE:-resources/models/default}
[ -f "$DATA/samples.parquet" ] || bash scripts/make_data.sh "$DATA"
start=$(date +%s)
mkdir -p "$WORK"
# the previous default is the baseline column of the evaluation
rm -rf "$WORK/baseline" && cp -r "$OUT_BUNDLE" "$WORK/baseline"
$PY -m training.locked --config "$CONFIG" --out "$WORK" --set "data.source=$DATA" \
  --threads "$THREADS"
echo "make model: trained in $(( $(date +%s) - start )) s"
$PY -m training.export --checkpoint "$WORK/checkpoint.pt" --out "$WORK/bundle" --optimize \
  --int8 text=embedding
$PY scripts/ship_bundle.py --bundle "$WORK/bundle" --dataset "$DATA" --out "$WORK/ship" \
  --int8 text --w16 aerial streetview text --holdout $HOLDOUT --max-mb 60
# shellcheck disable=SC2086
$PY -m training.targets_run --bundle "$WORK/ship" --bundle "$WORK/baseline" --dataset "$DATA" \
  --holdout $HOLDOUT --out "$WORK/targets" --threads "$THREADS" > /dev/null
$PY scripts/ship_bundle.py --bundle "$WORK/bundle" --dataset "$DATA" --out "$OUT_BUNDLE" \
  --int8 text --w16 aerial streetview text --holdout $HOLDOUT --max-mb 60 \
  --targets "$WORK/targets/targets.json" \
  --description "UniGeoCLIP default bundle: EfficientNet-Lite0 + spectral stream (aerial), Lite0 (street level), MiniLM (text), locked-image training ($CONFIG) on a CPU on the multi-sensor dataset from make data. See docs/MODEL_CARD.md."
$PY -m engine info "$OUT_BUNDLE"
echo "make model: done in $(( $(date +%s) - start )) s (targets: $WORK/targets/targets.md)"
