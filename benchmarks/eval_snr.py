"""Clip accuracy against SNR: fold-4 ESC-50 clips mixed over held-out noise at fixed SNRs, tagged by the detector.

The same mixing rule as the soundscapes (`models.training.synth`): the noise is scaled to an SNR over the clip's
active span (RMS), drawn from the held-out last 30 % of each background recording. One seed picks the clips and
the noise stretches, so every model sees the same mixtures. ONNX Runtime, one thread, 1 s windows, 0.1 s hop.

Usage:
    python benchmarks/eval_snr.py --model runs/final_sel/final runs/sel_v6/final --clips 120 \\
        --out benchmarks/results/selection/snr.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def main(argv: list[str] | None = None) -> int:
    from engines import create_engine
    from models.training.data import load_esc50
    from models.training.sed_data import clip_arrays
    from models.training.synth import active_bounds
    from realtime import Detector
    from realtime.sources import read_audio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", required=True)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/esc50"))
    ap.add_argument("--noise", default=str(ROOT.parent / "shared/data/noise"))
    ap.add_argument("--cache", default=str(ROOT / "runs/cache"))
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--snr", type=float, nargs="+", default=[24.0, 12.0, 6.0, 0.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from eval_detector import _noise_backgrounds

    ds = load_esc50(a.data, folds=[4], licenses=None)
    rng = np.random.default_rng(a.seed)
    idx = rng.choice(len(ds.items), min(a.clips, len(ds.items)), replace=False)
    bgs = [read_audio(p)[0] for p in _noise_backgrounds(Path(a.noise), Path(a.cache) / "noise_eval")]
    mixes: dict[str, list[np.ndarray]] = {"clean": []}
    targets = [ds.items[i].label for i in idx]
    waves = None
    for m in a.model:
        eng = create_engine("onnxruntime", m, intra_op_num_threads=1)
        det = Detector(eng)
        if waves is None:
            waves = clip_arrays([ds.items[i].path for i in idx], det.config.frontend)
            mixes["clean"] = waves
            for snr in a.snr:
                out = []
                for w in waves:
                    s0, s1 = active_bounds(w, 16000)
                    bg = bgs[int(rng.integers(len(bgs)))]
                    start = int(rng.integers(0, len(bg) - len(w)))
                    noise = bg[start:start + len(w)].astype(np.float64)
                    noise *= _rms(w[s0:s1]) * 10.0 ** (-snr / 20.0) / _rms(noise)
                    out.append((w + noise).astype(np.float32))
                mixes[f"{snr:g} dB"] = out
        row = {}
        for name, xs in mixes.items():
            pred = [int(np.argmax(det.clip_scores(x))) for x in xs]
            row[name] = float(np.mean(np.asarray(pred) == np.asarray(targets)))
        print(m, {k: round(v, 3) for k, v in row.items()}, flush=True)
        res = json.loads(Path(a.out).read_text()) if Path(a.out).is_file() else {}
        res[m] = {"accuracy": row, "clips": len(targets), "seed": a.seed, "date": time.strftime("%Y-%m-%d"),
                  "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
