#!/usr/bin/env bash
# The GPU checks of one device session, as one script: CUDA facts, the opt-in GPU tests and a
# short bf16 training run of the `small` config (samples/s, MFU, input wait), then export.
#
#   scripts/device_check.sh OUT_DIR [STEPS]
# Small results (logs, perf.json, metrics, curves, eval, export report) go to OUT_DIR; the
# checkpoint and bundle stay in a scratch folder (SCRATCH, default /tmp/unigeo_gpu), as they
# are too big to bring back. Every stage runs even when an earlier one failed; the exit status
# is the first failure's. Environment: PY (default .venv/bin/python if present, else python3).
set -uo pipefail
OUT=$(realpath -m "${1:?usage: scripts/device_check.sh OUT_DIR [STEPS]}")
STEPS=${2:-400}
SCRATCH=${SCRATCH:-/tmp/unigeo_gpu}
cd "$(dirname "$0")/.."
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$OUT" "$SCRATCH"
status=0
stage() {  # stage NAME CMD...: run, log to OUT/NAME.log, remember the first failure
  local name=$1; shift
  echo "== $name"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc"; tail -n 5 "$OUT/$name.log"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

stage env bash -c "nvidia-smi; $PY -c 'import sys, torch; print(sys.version); \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), \
torch.cuda.is_bf16_supported())'"
stage imports "$PY" -c "
import importlib
for m in ('numpy', 'torch', 'transformers', 'tokenizers', 'onnx', 'onnxruntime', 'yaml',
          'pyarrow', 'matplotlib', 'tqdm', 'pytest', 'hypothesis'):
    try:
        print(m, getattr(importlib.import_module(m), '__version__', '?'))
    except Exception as e:
        print(m, 'MISSING', e)
"
stage pytest_gpu "$PY" -m pytest -m gpu tests/training/test_gpu.py -q -p no:qgis -p no:cacheprovider
stage train_small env PY="$PY" scripts/train_gpu.sh "$SCRATCH/small" toy "$STEPS"
for f in perf.json metrics.csv curves.png eval.json eval.md; do
  cp "$SCRATCH/small/train/$f" "$OUT/" 2>/dev/null || true
done
cp "$SCRATCH/small/bundle/export_report.json" "$OUT/" 2>/dev/null || true
exit "$status"
