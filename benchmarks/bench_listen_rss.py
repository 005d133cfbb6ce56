"""Peak RSS of `aed listen` with the ONNX Runtime engine, and proof that torch was never imported.

Runs `aed listen --source CLIP --fast --engine onnxruntime` in a fresh process per repetition
and reads the child's peak RSS from `resource.getrusage(RUSAGE_CHILDREN)` via a tiny wrapper.
The model is the shipped default when present, else an ONNX export of `datar_tiny` with random
weights (the same compute graph; the RSS does not depend on the weight values).

Usage: python benchmarks/bench_listen_rss.py [--reps 3] [--model PATH]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "esc50" / "audio" / "1-100032-A-0.flac"

WRAPPER = r"""
import json, resource, sys
sys.argv = ["aed"] + sys.argv[1:]
from apps.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ("torch", "tensorrt", "PySide6", "pyqtgraph") if m in sys.modules]
print(json.dumps({"exit": code, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "heavy": heavy}),
      file=sys.stderr)
"""


def model_path(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given"
    default = ROOT / "models" / "pretrained" / "aed_default"
    if (default / "model.onnx").exists():
        return default / "model.onnx", "shipped default model"
    # Export in a separate process: Linux keeps ru_maxrss across execve, so a parent that had
    # imported torch would pass its peak on to the children we measure.
    out = tmp / "datar_tiny.onnx"
    code = ("import models; from realtime.config import FrontEndConfig; "
            "m = models.create_model('datar_tiny', num_classes=50); "
            "cfg = models.io.build_config(m, labels=[f'class_{i}' for i in range(50)], "
            "frontend=FrontEndConfig(num_mel_bins=m.num_mel_bins)); "
            f"models.export_onnx(m, {str(out)!r}, cfg)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
    return out, "datar_tiny, random weights (no default model shipped yet)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "listen_rss"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        path, what = model_path(args.model, Path(td))
        runs = []
        for _ in range(args.reps):
            r = subprocess.run([sys.executable, "-c", WRAPPER, "listen", "--source", str(CLIP), "--fast",
                                "--engine", "onnxruntime", "--model", str(path)],
                               capture_output=True, text=True, cwd=ROOT)
            info = json.loads(r.stderr.strip().splitlines()[-1])
            summary = json.loads([l for l in r.stdout.splitlines() if l.startswith('{"summary"')][-1])["summary"]
            runs.append({**info, "windows": summary["windows"], "rtf": summary["rtf"]})
    rss_mb = [r["maxrss_kb"] / 1024 for r in runs]
    res = {"model": what, "clip": CLIP.name, "runs": runs, "median_peak_rss_mb": float(np.median(rss_mb)),
           "torch_imported": any("torch" in r["heavy"] for r in runs), "target_mb": 120,
           "command": "python benchmarks/bench_listen_rss.py"}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = ["# Peak RSS of `aed listen` (ONNX Runtime engine)", "",
          f"Model: {what}. Input: `{CLIP.name}` replayed with `--fast`. {args.reps} fresh processes.", "",
          "| run | peak RSS (MB) | windows | RTF | heavy modules imported |", "|---:|---:|---:|---:|---|"]
    md += [f"| {i + 1} | {r['maxrss_kb'] / 1024:.1f} | {r['windows']} | {r['rtf']} | {r['heavy'] or 'none'} |"
           for i, r in enumerate(runs)]
    md += ["", f"Median peak RSS: **{res['median_peak_rss_mb']:.1f} MB** (target ≤ 120 MB); torch imported: "
           f"{res['torch_imported']}.", "", f"Command: `{res['command']}`"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
