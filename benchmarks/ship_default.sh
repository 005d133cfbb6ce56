#!/usr/bin/env bash
# How models/pretrained/aed_default was made, step by step (one CPU thread per run; two runs share 2 cores).
# The figures quoted in MODEL_CARD.md come from steps 1-2 (trained on folds 1-3, evaluated on held-out data).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

# 1. selection runs: the plain pretrained MobileNet (baseline, also the distillation teacher) and the hybrid
$PY -m models.training.sed_run --model mn04 --out runs/sel_mn04 --epochs 30
# the input adaptor in its foldable form (ReLU, 1x1 output map; computed inside the stem's first conv)
FOLD='{"adaptor_act": "relu", "adaptor_out_kernel": 1}'
$PY -m models.training.sed_run --model datar_mn04 --model-kwargs "$FOLD" --out runs/sel_fold --epochs 40 \
    --distill-from runs/sel_mn04/final

# 2. export and evaluate on held-out data: fold 4 clips, soundscapes over held-out noise, negatives
for run in sel_mn04 sel_fold; do
  $PY -m models.training.export_run runs/$run/final
done
$PY benchmarks/eval_detector.py --model runs/sel_mn04/final --out benchmarks/results/selection/mn04
$PY benchmarks/eval_detector.py --model runs/sel_fold/final --out benchmarks/results/selection/datar_mn04_fold_ola3 \
    --sources ola --ola-delay 0.3 --no-early-windows --onset-refines none energy:1.0 energy:1.5
# (the earlier rows of benchmarks/results/selection/README.md: runs/final_sel, the same recipe with DATAR's GELU
#  adaptor, --model datar_mn04 without --model-kwargs; their eval.json files record their commands)

# 3. the shipped weights: the same recipe on folds 1-4 (CC0 and CC-BY clips only)
$PY -m models.training.sed_run --model datar_mn04 --model-kwargs "$FOLD" --out runs/ship_fold --epochs 40 \
    --train-folds 1 2 3 4 --val-folds --distill-from runs/sel_mn04/final

# 4. package with the detection settings tuned in step 2 (tuning soundscapes of fold 4 only)
$PY -m models.training.ship runs/ship_fold/final models/pretrained/aed_default \
    --thresholds benchmarks/results/selection/datar_mn04_fold_ola3/thresholds_ola.json --onset-source ola
# 5. model-triggered latency with the shipped settings on the selection model (it never trained on fold 4)
$PY -m models.training.ship runs/sel_fold/final runs/sel_fold_tuned \
    --thresholds benchmarks/results/selection/datar_mn04_fold_ola3/thresholds_ola.json --onset-source ola
$PY benchmarks/profile_scapes.py --model runs/sel_fold_tuned --report benchmarks/results/profile_scapes
