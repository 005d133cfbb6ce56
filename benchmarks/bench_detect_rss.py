"""Peak RSS of ``aed detect`` against the length of the file: it must not grow with the file.

Writes 1-, 10- and 30-minute 16 kHz FLAC files (background noise with a tone burst every 7 s, written block by
block), then runs ``aed detect FILE -o OUT --engine onnxruntime`` on each in a fresh process and reads that
process's peak RSS (``ru_maxrss``) and wall time. With ``--old REV`` the same files also go through the code of an
older commit (checked out into a temporary git worktree, same interpreter and packages), side by side in one run.

Usage: python benchmarks/bench_detect_rss.py [--minutes 1 10 30] [--hop-fine-minutes 10] [--old a16b029]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WRAPPER = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from apps.cli import main
code = main(sys.argv[1:])
print(json.dumps({"exit": code, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "wall_s": time.perf_counter() - t0}), file=sys.stderr)
"""


def write_test_file(path: Path, minutes: float, rate: int = 16000, seed: int = 0) -> None:
    """Noise at about -40 dBFS with a 1 s, 1 kHz burst every 7 s, written a minute at a time."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n_total = int(minutes * 60 * rate)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        for start in range(0, n_total, 60 * rate):
            n = min(60 * rate, n_total - start)
            t = (start + np.arange(n)) / rate
            x = 0.01 * rng.standard_normal(n)
            x += np.where((t % 7.0) < 1.0, 0.3 * np.sin(2 * np.pi * 1000 * t), 0.0)
            f.write(x.astype(np.float32))


def run_detect(code_root: Path, wav: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-c", WRAPPER, "detect", str(wav), "-o", str(out), "--engine", "onnxruntime",
           "--model", str(ROOT / "models" / "pretrained" / "aed_default"), *extra]
    env = dict(os.environ, PYTHONPATH=str(code_root))
    p = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    last = [ln for ln in p.stderr.splitlines() if ln.startswith("{")]
    if not last:
        raise RuntimeError(f"detect failed in {code_root}: {p.stderr[-2000:]}")
    res = json.loads(last[-1])
    res["rows"] = max(0, len(out.read_text().splitlines()) - 1) if out.exists() else 0
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    ap.add_argument("--hop-fine-minutes", type=float, nargs="*", default=[10],
                    help="also run these lengths with --hop 0.01 (100 windows a second)")
    ap.add_argument("--old", help="a git revision to compare against (e.g. the commit before the fix)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detect_rss"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        roots = {"now": ROOT}
        if args.old:
            old = td / "old"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), args.old], cwd=ROOT, check=True)
            roots[f"old ({args.old})"] = old
        try:
            runs = [(m, []) for m in args.minutes] + [(m, ["--hop", "0.01"]) for m in args.hop_fine_minutes]
            for minutes, extra in runs:
                wav = td / f"noise_{minutes:g}min.flac"
                if not wav.exists():
                    write_test_file(wav, minutes)
                for name, root in roots.items():
                    res = run_detect(root, wav, td / "out.tsv", extra)
                    row = {"code": name, "minutes": minutes, "hop_s": 0.01 if extra else "model's (0.1)",
                           "peak_rss_mb": round(res["maxrss_kb"] / 1024, 1), "wall_s": round(res["wall_s"], 1),
                           "rtf": round(res["wall_s"] / (minutes * 60), 4), "rows": res["rows"], "exit": res["exit"]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if args.old:
                subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "time": time.strftime("%Y-%m-%d %H:%M")}, indent=1))
    lines = ["# Peak RSS of `aed detect` against file length", "",
             "Input: 16 kHz mono FLAC, noise at about -40 dBFS with a 1 s tone burst every 7 s. Model: the shipped "
             "default, ONNX Runtime engine, 1 thread. One fresh process per row; peak RSS is its `ru_maxrss`.", "",
             "| code | minutes | hop (s) | peak RSS (MB) | wall (s) | real-time factor | event rows | exit |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['code']} | {r['minutes']:g} | {r['hop_s']} | {r['peak_rss_mb']} | {r['wall_s']} | {r['rtf']} | "
              f"{r['rows']} | {r['exit']} |" for r in rows]
    lines += ["", f"Command: `python benchmarks/bench_detect_rss.py {' '.join(sys.argv[1:])}`".rstrip()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
