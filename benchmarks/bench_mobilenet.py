"""The MobileNet family side by side with the old default and an AST: size, MACs and ONNX Runtime ms per window.

Every model is exported once (``models.export_onnx``, opset 17) and then timed in interleaved rounds: each round
runs every model for ``--seconds`` on one ONNX Runtime thread, batch 1, one 1 s window (100 frames), after
warm-up; the table gives the median over rounds of each round's median and p99, and every model's ratio to
``mn04``. Interleaving keeps a noisy shared machine's slow spells from landing on one model only.

Models: registry variants with their default options (random weights; latency does not depend on the values)
and, with ``--checkpoint NAME=DIR``, trained checkpoints (their own ``model.onnx``).

Usage:
    python benchmarks/bench_mobilenet.py --rounds 5 --seconds 2 \\
        --checkpoint aed_default=models/pretrained/aed_default
    python benchmarks/bench_mobilenet.py --models mn04 --variant 'cut12=datar_mn04:{"cut": 12}' --out /tmp/cuts
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_models import count_macs, time_onnx  # noqa: E402

from models import create_model, export_onnx, load  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_MODELS = ["mn04", "mn10", "datar_mn04", "datar_nano", "ast_tiny"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=MODEL:JSON",
                    help='a registry model with constructor options, e.g. cut12=datar_mn04:{"cut": 12}')
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=str(RESULTS / "mobilenet"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        specs = [(name, name, {}) for name in a.models]
        for spec in a.variant:
            name, rest = spec.split("=", 1)
            model_name, _, opts = rest.partition(":")
            specs.append((name, model_name, json.loads(opts or "{}")))
        for name, model_name, opts in specs:
            torch.manual_seed(0)
            m = create_model(model_name, **opts).eval()
            x = torch.randn(1, 100, m.num_mel_bins)
            path = export_onnx(m, Path(tmp) / f"{name}.onnx", example_frames=100)
            source = "registry (random init)" + (f", {model_name} {json.dumps(opts)}" if opts else "")
            entries.append({"model": name, "source": source, "classes": m.num_classes,
                            "params": sum(p.numel() for p in m.parameters()), "macs": count_macs(m, x),
                            "onnx": path, "onnx_mb": path.stat().st_size / 1e6, "x": x.numpy()})
        for spec in a.checkpoint:
            name, d = spec.split("=", 1)
            m, cfg = load(d)
            x = torch.randn(1, 100, m.num_mel_bins)
            path = Path(d) / "model.onnx"
            entries.append({"model": name, "source": f"checkpoint {d} ({cfg.name})", "classes": m.num_classes,
                            "params": sum(p.numel() for p in m.parameters()), "macs": count_macs(m, x),
                            "onnx": path, "onnx_mb": path.stat().st_size / 1e6, "x": x.numpy()})
        rounds: dict[str, list[dict]] = {e["model"]: [] for e in entries}
        for r in range(a.rounds):
            for e in entries:
                rounds[e["model"]].append(time_onnx(e["onnx"], e["x"], a.seconds))
            print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {v[-1]['median_ms']:.3f}" for k, v in rounds.items()),
                  flush=True)
    rows = []
    for e in entries:
        med = float(np.median([t["median_ms"] for t in rounds[e["model"]]]))
        p99 = float(np.median([t["p99_ms"] for t in rounds[e["model"]]]))
        rows.append({k: v for k, v in e.items() if k not in ("onnx", "x")} | {"median_ms": med, "p99_ms": p99,
                    "round_medians_ms": [t["median_ms"] for t in rounds[e["model"]]]})
    ref_row = next((r for r in rows if r["model"] == "mn04"), rows[0])
    ref = ref_row["median_ms"]
    for r in rows:  # paired: each round's ratio to the reference timed in the same round, then the median
        per_round = np.asarray(r["round_medians_ms"]) / np.asarray(ref_row["round_medians_ms"])
        r["paired_ratio"] = float(np.median(per_round))
    env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
           "rounds": a.rounds, "seconds_per_round": a.seconds}
    import onnxruntime as ort

    env["onnxruntime"] = ort.__version__
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    lines = ["# MobileNet family vs the old default and AST: parameters, MACs, ms per 1 s window", "",
             f"Generated by `{env['command']}` on {env['date']} ({env['cpu']}, a shared 2-core machine; ONNX Runtime "
             f"{env['onnxruntime']}, one intra-op thread, batch 1, 100 frames). {a.rounds} interleaved rounds of "
             f"{a.seconds:g} s per model; median over rounds of each round's median and p99. MACs from "
             "`FlopCounterMode` (matrix products and convolutions only). `× mn04`: the ratio of the medians; "
             "`paired`: the median over rounds of each round's ratio to `mn04` timed in the same round (steadier "
             "on a machine whose speed drifts).", "",
             "| model | weights | classes | params (M) | MMACs / 1 s | ONNX (MB) | median (ms) | p99 (ms) | × mn04 | "
             "paired × mn04 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['source']} | {r['classes']} | {r['params'] / 1e6:.3f} | "
                     f"{r['macs'] / 1e6:.1f} | {r['onnx_mb']:.2f} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['median_ms'] / ref:.2f} | {r['paired_ratio']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
