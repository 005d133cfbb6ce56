#!/usr/bin/env bash
# Re-record the benchmarks that depend on the shipped default model, one after another (never two at once:
# the machines are small and shared). Each script writes its own files under benchmarks/results/.
# Usage: benchmarks/run_all.sh [all]   ("all" also re-runs the weight-independent model/front-end benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
step() { echo "== $(date +%T) $*"; "$@"; }
if [ "${1:-}" = all ]; then
  step $PY benchmarks/bench_frontend.py
  step $PY benchmarks/bench_models.py
  step $PY benchmarks/bench_datar.py --reps 200
fi
step $PY benchmarks/bench_listen_rss.py
step $PY benchmarks/bench_engines.py
step $PY benchmarks/profile_default.py --engines loudness,onnxruntime,torch
step env QT_QPA_PLATFORM=offscreen $PY benchmarks/bench_monitor.py \
  --model-note "the shipped default model (models/pretrained/aed_default)"
echo "== $(date +%T) done"
