"""DATAR-tiny and DATAR-nano against AST-tiny on 1 s and 10 s windows: ONNX Runtime on one thread, MACs, parameters.

Each model is exported with ``models.export_onnx`` (opset 17, dynamic batch and time) and run by ONNX Runtime's
CPU provider with ``intra_op_num_threads=1, inter_op_num_threads=1`` on batch-1 windows of 100 and 1000 frames
(1 s and 10 s at 10 ms hop). DATAR reads 64 mel bins; AST-tiny reads its own 128 (its registry default), so the
AST input carries twice the bins: the comparison is per window of audio, not per input value. Runs of the two
models alternate so that drift on a shared machine hits all alike. The same DATAR pyramid with plain global
attention (``attn='standard'``, the ablation) runs alongside, to separate what deformable attention buys from what
the pyramid buys. Each run records wall time and the process's CPU time (``time.process_time``), which a loaded
machine inflates less than wall time. MACs are ``FlopCounterMode`` FLOPs / 2 in
torch eager (matmuls and convolutions; grid_sample, softmax and elementwise ops are not counted). Weights are
random: cost does not depend on them.

Usage: python benchmarks/bench_datar.py [--reps 30] [--warmup 3] [--out benchmarks/results/datar]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

WINDOWS = {"1 s": 100, "10 s": 1000}
# label -> (registry name, kwargs); the standard-attention DATAR is the same pyramid with global MHSA in every stage
MODELS = {"datar_tiny": ("datar_tiny", {}), "datar_nano": ("datar_nano", {}), "ast_tiny": ("ast_tiny", {}),
          "datar_tiny attn=standard": ("datar_tiny", {"attn": "standard"})}


def count_macs(model, frames: int) -> float:
    """Multiply-accumulates of one batch-1 window (FlopCounterMode FLOPs / 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, frames, model.num_mel_bins)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2


def session(path: Path):
    """A one-thread ONNX Runtime CPU session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30, help="timed runs per model and window")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/datar")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch

    import models

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    res: dict[str, dict] = {}
    sessions, inputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        load_start = os.getloadavg()[0]
        for i, (name, (reg_name, kwargs)) in enumerate(MODELS.items()):
            model = models.create_model(reg_name, **kwargs).eval()
            path = models.export_onnx(model, Path(tmp) / f"model{i}.onnx")
            ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            res[name] = {
                "num_mel_bins": model.num_mel_bins,
                "params": sum(p.numel() for p in model.parameters()),
                "macs": {w: count_macs(model, t) for w, t in WINDOWS.items()},
                "onnx_nodes": sum(ops.values()),
                "onnx_ops": {k: ops[k] for k in ("GridSample", "MatMul", "Softmax", "Conv") if k in ops},
                "ms": {w: [] for w in WINDOWS},
                "cpu_ms": {w: [] for w in WINDOWS},
            }
            sessions[name] = session(path)
            inputs[name] = {w: rng.standard_normal((1, t, model.num_mel_bins)).astype(np.float32)
                            for w, t in WINDOWS.items()}
            for w in WINDOWS:
                for _ in range(args.warmup):
                    sessions[name].run(None, {"fbank": inputs[name][w]})
        for _ in range(args.reps):
            for w in WINDOWS:
                for name in MODELS:  # alternate the models
                    t0, c0 = time.perf_counter(), time.process_time()
                    sessions[name].run(None, {"fbank": inputs[name][w]})
                    res[name]["ms"][w].append((time.perf_counter() - t0) * 1e3)
                    res[name]["cpu_ms"][w].append((time.process_time() - c0) * 1e3)

    summary = {}
    for name, r in res.items():
        s = {"params": r["params"], "num_mel_bins": r["num_mel_bins"], "onnx_nodes": r["onnx_nodes"],
             "onnx_ops": r["onnx_ops"]}
        for w in WINDOWS:
            t = np.asarray(r["ms"][w])
            s[w] = {"median_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99)),
                    "median_cpu_ms": float(np.median(r["cpu_ms"][w])),
                    "rtf": float(np.median(t)) / 1e3 / (WINDOWS[w] / 100), "mmacs": r["macs"][w] / 1e6}
        s["growth_1s_to_10s"] = {
            "time_ratio": s["10 s"]["median_ms"] / s["1 s"]["median_ms"],
            "macs_ratio": r["macs"]["10 s"] / r["macs"]["1 s"],
        }
        s["growth_1s_to_10s"]["time_exponent"] = math.log10(s["growth_1s_to_10s"]["time_ratio"])
        s["growth_1s_to_10s"]["macs_exponent"] = math.log10(s["growth_1s_to_10s"]["macs_ratio"])
        summary[name] = s

    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
           "torch": torch.__version__, "onnxruntime": ort.__version__, "reps": args.reps, "warmup": args.warmup,
           "threads": "intra_op=1, inter_op=1", "date": time.strftime("%Y-%m-%d"),
           "load_avg_1min": [load_start, os.getloadavg()[0]]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "results": summary,
                                                    "raw_ms": {n: r["ms"] for n, r in res.items()},
                                                    "raw_cpu_ms": {n: r["cpu_ms"] for n, r in res.items()}}, indent=2))

    lines = ["# DATAR-tiny and DATAR-nano against AST-tiny: ONNX Runtime, one thread", "",
             f"Batch-1 windows of 1 s (100 frames) and 10 s (1000 frames); {args.reps} timed runs each after "
             f"{args.warmup} warm-up runs, the models alternating. DATAR reads 64 mel bins, AST-tiny its "
             "own 128 (registry default). Wall and process CPU time per window (CPU time is less inflated by "
             "other work on a shared machine; both are medians). `datar_tiny attn=standard` is the same pyramid "
             "with plain global multi-head attention in every stage (the ablation). Random weights. MACs: "
             "FlopCounterMode FLOPs / 2 (matmul and conv only).",
             "", "| model | mel | params (M) | window | median ms | p99 ms | median CPU ms | RTF | MMACs |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        for w in WINDOWS:
            lines.append(f"| {name} | {s['num_mel_bins']} | {s['params'] / 1e6:.2f} | {w} | {s[w]['median_ms']:.2f} | "
                         f"{s[w]['p99_ms']:.2f} | {s[w]['median_cpu_ms']:.2f} | {s[w]['rtf']:.4f} | "
                         f"{s[w]['mmacs']:.1f} |")
    lines += ["", "Cost growth from 1 s to 10 s (10x the frames; linear = 10x, exponent 1; quadratic = 100x, "
              "exponent 2). A time ratio below the MACs ratio means a fixed per-window cost (per-node overhead of the "
              "graph) weighs on the short window:", "",
              "| model | time ratio | time exponent | MACs ratio | MACs exponent |",
              "|---|---:|---:|---:|---:|"]
    for name, s in summary.items():
        g = s["growth_1s_to_10s"]
        lines.append(f"| {name} | {g['time_ratio']:.1f} | {g['time_exponent']:.2f} | {g['macs_ratio']:.1f} | "
                     f"{g['macs_exponent']:.2f} |")
    lines += ["", "Exported graphs: " + "; ".join(f"{n}: {s['onnx_nodes']} nodes, {s['onnx_ops']}"
                                                  for n, s in summary.items()), "",
              f"Machine: {env['machine']}, {env['cpus']} cores shared with other work (1-minute load average "
              f"{env['load_avg_1min'][0]:.1f} at the start, {env['load_avg_1min'][1]:.1f} at the end: absolute "
              "timings are noisy; the alternation keeps the comparison fair), "
              f"Python {env['python']}, torch {env['torch']}, onnxruntime {env['onnxruntime']}, {env['date']}. "
              f"Command: `python benchmarks/bench_datar.py --reps {args.reps}`.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
