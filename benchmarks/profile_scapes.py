"""Model-triggered onset latency with ``aed profile`` on held-out fold-4 soundscapes.

Joins the first N test soundscapes of ``benchmarks/eval_detector.py`` (fold-4 clips of the test half over the
held-out noise stretches; one event per active run) into one file with its DCASE TSV, then runs
``aed profile --source FILE --events TSV --trigger model`` with the given model (real-time pace, ONNX Runtime,
one thread, 1 s windows, 0.1 s hop) and writes its report.

Usage:
    python benchmarks/profile_scapes.py --model runs/final_sel/final --report benchmarks/results/profile_scapes
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    from models.training.data import read_dcase_tsv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--scapes", default=str(ROOT / "runs/cache/scapes-v4-test-40-12"))
    ap.add_argument("--count", type=int, default=12)
    a = ap.parse_args(argv)
    d = Path(a.scapes)
    ref = read_dcase_tsv(d / "labels.tsv")
    out = Path(a.report)
    out.mkdir(parents=True, exist_ok=True)
    parts, rows, t = [], [], 0.0
    for p in sorted((d / "audio").iterdir())[:a.count]:
        x, sr = sf.read(str(p), dtype="float32")
        parts.append(x)
        rows += [(t + r.onset, t + r.offset, r.event_label) for r in ref if r.filename == p.name]
        t += len(x) / sr
    wav, tsv = out / "scapes.wav", out / "scapes.tsv"
    sf.write(str(wav), np.concatenate(parts), 16000, subtype="FLOAT")
    tsv.write_text("onset\toffset\tevent_label\n" + "".join(f"{a_:.3f}\t{b:.3f}\t{c}\n" for a_, b, c in rows))
    cmd = [str(ROOT / ".venv/bin/aed"), "profile", "--source", str(wav), "--events", str(tsv), "--trigger", "model",
           "--model", a.model, "--engines", "onnxruntime", "--threads", "1", "--report", str(out), "--quiet"]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
