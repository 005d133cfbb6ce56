"""Benchmark the CPU engines: ms per 1 s window, windows/s, peak RSS.

For each model (a registry name such as ``ast_tiny``, with fresh untrained weights, which cost the same
compute as trained ones, or a checkpoint directory such as the shipped ``models/pretrained/aed_default``)
and each engine configuration (ONNX Runtime with 1 and 2 threads, ONNX Runtime INT8
with 1 thread, torch eager on the CPU with 1 thread), a separate Python process loads the engine,
warms up, times batch-1 calls (p50/p99 ms per window) and batch-32 calls (windows/s), and reports its
peak RSS (``ru_maxrss``), so that one configuration's memory never counts towards another's.

Usage:
    python benchmarks/bench_engines.py [--models models/pretrained/aed_default ast_tiny] [--iters 300]
        [--accuracy-data ../shared/data/esc50 --accuracy-folds 4] [--out benchmarks/results]

For a checkpoint directory with labels matching ESC-50, ``--accuracy-data`` also scores the CC0/CC-BY clips
of ``--accuracy-folds`` through ``realtime.Detector.clip_scores`` with the fp32 and the INT8 ONNX files
(ONNX Runtime, one thread), so that the INT8 accuracy change is measured, not guessed.

Writes ``engines.md`` and ``engines.json`` in ``--out``. CUDA rows are listed as skipped with the
reason when no GPU is visible.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (label, engine kind, onnx variant, threads, extra options)
    ("onnxruntime, 1 thread", "onnxruntime", "fp32", 1, {}),
    ("onnxruntime, 2 threads", "onnxruntime", "fp32", 2, {}),
    ("onnxruntime INT8, 1 thread", "onnxruntime", "int8", 1, {}),
    ("torch CPU eager, 1 thread", "torch", None, 1, {"device": "cpu"}),
]
CUDA_CONFIGS = [("torch CUDA fp32", {"device": "cuda", "precision": "fp32", "mode": "eager"}),
                ("torch CUDA fp16", {"device": "cuda", "precision": "fp16", "mode": "eager"}),
                ("torch CUDA fp16 + CUDA graphs", {"device": "cuda", "precision": "fp16", "mode": "cuda_graph"})]


# --------------------------------------------------------------------------- worker (one configuration)
def worker(args: argparse.Namespace) -> None:
    import resource

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from engines import create_engine

    options = json.loads(args.options)
    t0 = time.perf_counter()
    eng = create_engine(args.engine, args.model_path, threads=args.threads, **options)
    load_s = time.perf_counter() - t0
    t = args.frames
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, t, eng.spec.num_mel_bins)).astype(np.float32)
    xb = rng.standard_normal((args.batch, t, eng.spec.num_mel_bins)).astype(np.float32)
    for _ in range(args.warmup):
        eng.infer(x1)
    lat, cpu = [], []
    deadline = time.perf_counter() + args.max_seconds
    for _ in range(args.iters):
        c, s = time.process_time(), time.perf_counter()
        eng.infer(x1)
        lat.append(time.perf_counter() - s)
        cpu.append(time.process_time() - c)
        if time.perf_counter() > deadline and len(lat) >= 20:
            break
    eng.infer(xb)  # warm-up at batch 32
    blat = []
    deadline = time.perf_counter() + args.max_seconds
    for _ in range(max(3, args.iters // 20)):
        s = time.perf_counter()
        eng.infer(xb)
        blat.append(time.perf_counter() - s)
        if time.perf_counter() > deadline and len(blat) >= 3:
            break
    lat_ms = np.array(lat) * 1e3
    out = {"p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
           "min_ms": float(lat_ms.min()), "cpu_ms_median": float(np.median(cpu) * 1e3),
           "mean_ms": float(lat_ms.mean()), "n_batch1": len(lat),
           "windows_per_s_b1": float(1e3 / np.median(lat_ms)),
           "windows_per_s_b32": float(args.batch / np.median(blat)), "n_batch32": len(blat),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "load_s": load_s,
           "torch_imported": "torch" in sys.modules}
    out["vm_hwm_mb"] = _vm_hwm_mb()
    print("RESULT " + json.dumps(out))


def _vm_hwm_mb() -> float | None:
    """Peak resident set of this process image from /proc (a cross-check of ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- driver
def prepare(name: str, d: Path, acc_data: str | None = None, acc_folds: str = "4") -> dict:
    """Checkpoint, ONNX and INT8 ONNX for ``name`` (a registry name: fresh weights; a directory: its trained
    weights); returns paths, deviations and, for a trained checkpoint with ``acc_data``, fold accuracies."""
    import numpy as np
    import torch

    import models
    from engines import create_engine
    from engines.quantize import quantize_int8

    trained = Path(name).is_dir()
    if trained:
        ckpt = Path(name)
    else:
        torch.manual_seed(0)
        ckpt = models.save(models.create_model(name).eval(), d / "ckpt")
    model, config = models.load(ckpt)
    onnx = models.export_onnx(model, d / "model.onnx", config=config)
    q = quantize_int8(onnx, d / "model.int8.onnx")
    x = np.random.default_rng(1).standard_normal((8, 100, model.num_mel_bins)).astype(np.float32)
    with create_engine("onnxruntime", onnx) as a, create_engine("onnxruntime", q) as b, \
            create_engine("torch", ckpt, device="cpu") as c:
        sa, sb, sc = a.infer(x), b.infer(x), c.infer(x)
    params = sum(p.numel() for p in model.parameters())
    return {"ckpt": str(ckpt), "fp32": str(onnx), "int8": str(q), "params": params,
            "onnx_mb": onnx.stat().st_size / 2**20, "int8_mb": q.stat().st_size / 2**20,
            "int8_max_dev": float(np.abs(sa - sb).max()), "torch_ort_max_dev": float(np.abs(sa - sc).max()),
            "num_mel_bins": model.num_mel_bins, "classes": model.num_classes, "trained": trained,
            "accuracy": _accuracy(onnx, q, acc_data, acc_folds, config) if trained and acc_data else None}


def _accuracy(fp32: Path, int8: Path, data: str, folds: str, config: Any = None) -> dict | None:
    """Clip-level accuracy and mAP of the fp32 and INT8 ONNX files on ESC-50 ``folds`` (CC0/CC-BY clips),
    through the streaming Detector with the model's own window and hop, ONNX Runtime on one thread.
    ``seen_folds`` lists the folds that the model's own training record says it was trained on."""
    import numpy as np

    from engines import create_engine
    from models.training.data import decode_items, load_esc50
    from models.training.metrics import accuracy, mean_average_precision
    from realtime import Detector
    from realtime.detector import DetectorConfig

    if not (Path(data) / "esc50.csv").is_file():
        return None
    fold_list = [int(f) for f in folds.split(",")]
    ds = load_esc50(data, folds=fold_list)
    training = dict(getattr(config, "training", None) or {})   # config: a realtime.config.ModelConfig
    recipe = training.get("sed_config") or training.get("train_config") or {}  # detection or clip recipe
    trained_on = recipe.get("train_folds") or []
    out = {"folds": folds, "clips": 0, "seen_folds": sorted(set(trained_on) & set(fold_list))}
    waves = kept = None
    for variant, path in (("fp32", fp32), ("int8", int8)):
        with create_engine("onnxruntime", path, threads=1) as eng:
            if list(eng.labels) != ds.labels:
                return None
            det = Detector(eng, DetectorConfig.from_model(eng.config))
            if waves is None:
                waves, kept, _ = decode_items(ds.items, det.input_rate)
            t0 = time.perf_counter()
            scores = np.stack([det.clip_scores(w) for w in waves])
            secs = time.perf_counter() - t0
        targets = np.array([it.label for it in kept])
        out["clips"] = len(kept)
        out[variant] = {"accuracy": float(accuracy(scores, targets)),
                        "map": float(mean_average_precision(scores, targets)[0]),
                        "seconds": secs}
    return out


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "loadavg_at_start": os.getloadavg(), "python": platform.python_version(), "platform": platform.platform()}


def versions() -> dict:
    import numpy
    import onnxruntime
    import torch
    return {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "cuda": torch.cuda.is_available()}


def run_config(path: str, engine: str, threads: int, options: dict, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--engine", engine, "--model-path", path, "--threads", str(threads),
           "--options", json.dumps(options), "--iters", str(args.iters), "--frames", "100", "--batch", "32",
           "--max-seconds", str(args.max_seconds)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return _child(cmd, env)


def _child(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["models/pretrained/aed_default", "ast_tiny"],
                    help="registry names (fresh weights) or checkpoint directories (trained weights)")
    ap.add_argument("--accuracy-data", default=str(ROOT.parent / "shared" / "data" / "esc50"),
                    help="ESC-50 root for the fp32/INT8 accuracy of trained checkpoints ('' skips it)")
    ap.add_argument("--accuracy-folds", default="4")
    ap.add_argument("--iters", type=int, default=300, help="batch-1 calls per configuration")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="time cap per timing loop")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=100, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", metavar="NAME", help=argparse.SUPPRESS)
    ap.add_argument("--prepare-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        worker(args)
        return 0
    if args.prepare:
        import warnings
        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps({**prepare(args.prepare, args.prepare_dir, args.accuracy_data or None,
                                                args.accuracy_folds), **versions()}))
        return 0
    # The driver stays small (no torch, no onnxruntime): ru_maxrss is inherited across fork+exec on Linux,
    # so a big driver would show up as every worker's peak RSS.
    info = machine()
    results: dict = {"machine": info, "window": "1 s = 100 frames", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            d = Path(tmp) / Path(name).name
            prep = _child([sys.executable, __file__, "--prepare", name, "--prepare-dir", str(d),
                           "--accuracy-data", args.accuracy_data, "--accuracy-folds", args.accuracy_folds])
            if "error" in prep:
                raise RuntimeError(f"preparing {name} failed: {prep['error']}")
            info.update({k: prep[k] for k in ("onnxruntime", "torch", "numpy", "cuda")})
            rows = []
            for label, engine, variant, threads, options in CONFIGS:
                path = prep["ckpt"] if engine == "torch" else prep[variant]
                r = run_config(path, engine, threads, options, args)
                rows.append({"config": label, **r})
                print(f"{name:12s} {label:28s} {r}", flush=True)
            for label, options in CUDA_CONFIGS:
                if info["cuda"]:
                    r = run_config(prep["ckpt"], "torch", 1, options, args)
                    rows.append({"config": label, **r})
                else:
                    rows.append({"config": label, "skipped": "no GPU lent to this task"})
            results["models"][name] = {"prep": {k: v for k, v in prep.items()
                                                if k not in ("ckpt", "fp32", "int8", "onnxruntime", "torch", "numpy",
                                                             "cuda")},
                                       "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engines.json").write_text(json.dumps(results, indent=2))
    (args.out / "engines.md").write_text(render(results, args))
    print((args.out / "engines.md").read_text())
    return 0


def render(res: dict, args: argparse.Namespace) -> str:
    m = res["machine"]
    lines = ["# Engine benchmark (CPU)", "",
             "Command: `python benchmarks/bench_engines.py"
             + (f" --models {' '.join(args.models)}" if args.models != ["models/pretrained/aed_default", "ast_tiny"]
               else "")
             + (f" --iters {args.iters}" if args.iters != 300 else "") + "`", "",
             f"Machine: {m['cpu']}, {m['affinity']} cores usable (shared with other jobs; load average at start "
             f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}), Python {m['python']}, onnxruntime "
             f"{m['onnxruntime']}, torch {m['torch']}, numpy {m['numpy']}.", "",
             "A model given by directory runs with its trained weights; one given by registry name with fresh "
             "untrained weights (the same compute per window). One window = 1 s = 100 frames. Batch-1 latency is p50/p99 over up to "
             f"{args.iters} calls after 20 warm-up calls; windows/s at batch 32 from the median batch time. Each row "
             "runs in its own process started by a small driver; peak RSS is that process's `ru_maxrss` (model load + "
             "both batch sizes; torch rows include torch itself, ONNX Runtime rows never import torch). The host has "
             "2 cores shared with other engineers' jobs, so wall-clock figures are inflated and noisy and 2-thread rows "
             "compete for cores; `min ms` (best call) and `CPU ms / window` (median process CPU time per call, all "
             "threads summed) are less sensitive to that load.", ""]
    for name, block in res["models"].items():
        p = block["prep"]
        lines += [f"## {name}", "",
                  f"{p['params'] / 1e6:.2f} M parameters, F = {p['num_mel_bins']}, {p['classes']} classes; ONNX "
                  f"{p['onnx_mb']:.1f} MB, INT8 {p['int8_mb']:.1f} MB. Max |score| deviation on 8 random windows: "
                  f"INT8 vs fp32 {p['int8_max_dev']:.1e}, torch vs onnxruntime {p['torch_ort_max_dev']:.1e}."
                  + (" Trained weights." if p.get("trained") else " Fresh (untrained) weights."), ""]
        a = p.get("accuracy")
        if a:
            lines += [f"INT8 accuracy change, ESC-50 fold {a['folds']} ({a['clips']} CC0/CC-BY clips, clip scores from "
                      "the streaming Detector, ONNX Runtime 1 thread): accuracy "
                      f"{100 * a['fp32']['accuracy']:.1f} % fp32 → {100 * a['int8']['accuracy']:.1f} % INT8 "
                      f"({100 * (a['int8']['accuracy'] - a['fp32']['accuracy']):+.1f} points), mAP "
                      f"{a['fp32']['map']:.3f} → {a['int8']['map']:.3f}; time to score all clips "
                      f"{a['fp32']['seconds']:.1f} s fp32, {a['int8']['seconds']:.1f} s INT8 "
                      f"({a['fp32']['seconds'] / a['int8']['seconds']:.2f}× speed-up)."
                      + (f" Fold(s) {a['seen_folds']} are in this model's training set, so the absolute figures are "
                         "training-set accuracy; only the INT8 − fp32 change is a measurement here."
                         if a.get("seen_folds") else " These clips are held out from this model's training."), ""]
        lines += [
                  "| configuration | p50 ms / window (B=1) | p99 ms | min ms | CPU ms / window | windows/s B=1 "
                  "| windows/s B=32 | peak RSS MB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in block["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['config']} | skipped: {r['skipped']} | | | | | | |")
            elif "error" in r:
                lines.append(f"| {r['config']} | error: {r['error'][:200]} | | | | | | |")
            else:
                lines.append(f"| {r['config']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['min_ms']:.2f} | "
                             f"{r['cpu_ms_median']:.2f} | {r['windows_per_s_b1']:.0f} | {r['windows_per_s_b32']:.0f} | "
                             f"{r['peak_rss_mb']:.0f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
