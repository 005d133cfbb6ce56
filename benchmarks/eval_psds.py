"""PSDS1 of a detector on the test soundscapes of ``benchmarks/eval_detector.py``, added to its ``eval.json``.

(``eval_detector.py`` computes it too; this re-scores only PSDS, e.g. after a psds_eval fix, without re-tuning.)

Usage:
    python benchmarks/eval_psds.py --model runs/final_sel/final --out benchmarks/results/selection/datar_mn04
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from eval_detector import _traces  # noqa: E402

from engines import create_engine  # noqa: E402
from models.training.sed_eval import psds1  # noqa: E402
from realtime import Detector  # noqa: E402
from realtime.detector import DetectorConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scapes", default=str(ROOT / "runs/cache/scapes-v4-test-40-12"))
    ap.add_argument("--sources", nargs="+", default=["frames", "max", "clip"])
    a = ap.parse_args(argv)
    out = Path(a.out)
    res = json.loads((out / "eval.json").read_text())
    eng = create_engine("onnxruntime", a.model, intra_op_num_threads=1)
    base = DetectorConfig.from_model(eng.config)
    for source in a.sources:
        tuned = json.loads((out / f"thresholds_{source}.json").read_text())
        cfg = base.override(onset_source=source, thresholds={}, early_windows=True,
                            merge_gap_s=tuned["merge_gap_s"], backdate_onsets=tuned["backdate_onsets"])
        det = Detector(eng, cfg)
        traces, ref = _traces(det, Path(a.scapes))
        r = psds1(det, traces, ref)
        res[source]["test"].update(r)
        print(source, r, flush=True)
    (out / "eval.json").write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
