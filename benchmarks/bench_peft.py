"""Few-shot retargeting of a trained detector, method by method: accuracy, trainable share, CPU minutes, size.

Protocol (issue 18): a base detector trained with the default's recipe on 40 ESC-50 classes (folds 1-3; the ten
classes below held out of it) is retargeted to the ten held-out classes with ``k`` training clips per class drawn
from folds 1-3 (CC0 / CC-BY clips), by each method (head only, AAT, LoAA, full fine-tuning), one CPU thread each.
Accuracy: top-1 of the clip tags (:meth:`realtime.Detector.clip_scores`, ONNX Runtime, 1 s windows, 0.1 s hop) on
every fold-4 clip of the ten classes (never trained on, by the base or the retargeted model).

Variable window length (the spatial adapter's claim): AAT at ``k = 8`` trained on windows drawn from 0.5-5 s, with
and without the spatial adapter, tagged with 0.5, 1, 2 and 5 s windows.

Each run writes ``OUT/runs/<name>.json`` and is skipped when that exists, so the grid can be split over processes
(``--shots 4`` in one, ``--shots 8`` in another) and resumed; ``--report`` writes ``OUT.md``, ``OUT.json`` and the
plot from whatever runs exist.

Usage:
    python -m models.training.sed_run --model datar_mn04 --out runs/peft/base40 --epochs 40 \\
        --exclude-classes frog crow chirping_birds thunderstorm coughing drinking_sipping can_opening \\
        glass_breaking engine hand_saw
    python benchmarks/bench_peft.py --base runs/peft/base40/final --shots 4 8
    python benchmarks/bench_peft.py --base runs/peft/base40/final --spatial
    python benchmarks/bench_peft.py --report
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELD_OUT = ["frog", "crow", "chirping_birds", "thunderstorm", "coughing", "drinking_sipping", "can_opening",
            "glass_breaking", "engine", "hand_saw"]
METHODS = ["head", "aat", "loaa", "full"]
WINDOWS = [0.5, 1.0, 2.0, 5.0]
RESULTS = ROOT / "benchmarks" / "results" / "peft"

log = logging.getLogger("bench_peft")


def _test_set(data: str, labels: list[str]):
    """Fold-4 clips of ``labels`` (all licences: evaluation only), decoded at 16 kHz, with their label indices."""
    from models.training.data import load_esc50
    from models.training.sed import subset_classes
    from models.training.sed_data import clip_arrays

    ds = subset_classes(load_esc50(data, folds=[4], licenses=None), HELD_OUT)
    if ds.labels != labels:
        raise RuntimeError(f"label order differs: {ds.labels} vs {labels}")
    return clip_arrays([it.path for it in ds.items], _fe()), [it.label for it in ds.items]


def _fe():
    from realtime.config import efficientat_frontend

    return efficientat_frontend(16000, 128)


def accuracy(model_dir: Path, waves, targets, window_s: float = 1.0) -> float:
    from engines import create_engine
    from realtime import Detector
    from realtime.detector import DetectorConfig

    eng = create_engine("onnxruntime", model_dir, intra_op_num_threads=1)
    det = Detector(eng, DetectorConfig.from_model(eng.config).override(window_s=window_s, hop_s=0.1))
    scores = np.stack([det.clip_scores(w) for w in waves])
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(targets)))


def run_one(name: str, base: str, data: str, out: Path, method: str, shots: int, epochs: int, windows: list[float],
            **extra) -> dict:
    from models.training.retarget import RetargetConfig, retarget

    path = out / "runs" / f"{name}.json"
    if path.is_file():
        log.info("%s: done before (%s)", name, path)
        return json.loads(path.read_text())
    cfg = RetargetConfig(init=base, peft=method, data=data, layout="esc50", classes=HELD_OUT, shots=shots,
                         out=str(ROOT / "runs" / "peft" / name), epochs=epochs, threads=1, **extra)
    res = retarget(cfg)
    from models.io import read_config

    prov = read_config(res.out).training
    waves, targets = _test_set(data, res.labels)
    row = {"name": name, "method": method, "shots": shots, "classes": len(res.labels), "train_clips": prov["train_clips"],
           "test_clips": len(targets), "trainable": res.trainable, "total": res.total,
           "trainable_percent": 100 * res.fraction, "cpu_minutes_training": prov["cpu_minutes_training"],
           "cpu_minutes_total": res.cpu_minutes, "checkpoint_bytes": res.checkpoint_bytes,
           "onnx_bytes": (res.out / "model.onnx").stat().st_size, "steps": prov["steps"],
           "accuracy": {f"{w:g}": accuracy(res.out, waves, targets, w) for w in windows},
           "thresholds": res.thresholds, "settings": {k: v for k, v in cfg.to_dict().items() if k != "classes"},
           "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, torch 1 thread"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    log.info("%s: %s", name, {k: row[k] for k in ("accuracy", "trainable_percent", "cpu_minutes_training")})
    return row


def report(out: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    grid = [r for r in rows if not r["name"].startswith("vary_")]
    vary = [r for r in rows if r["name"].startswith("vary_")]
    lines = ["# Retargeting the detector to ten new classes from k clips each", "",
             "Generated by `python benchmarks/bench_peft.py --report` from the runs in `benchmarks/results/peft/runs/`"
             " (commands: the docstring of `benchmarks/bench_peft.py`). Base: `datar_mn04` trained with the default's "
             "recipe (no teacher) on the 40 other ESC-50 classes, folds 1-3. New classes: " + ", ".join(HELD_OUT) +
             ". Training clips: k per class from folds 1-3 (CC0/CC-BY). Test: every fold-4 clip of the ten classes "
             "(80), top-1 of the clip tags through `realtime.Detector` and ONNX Runtime (1 s windows, 0.1 s hop). "
             "CPU minutes: process time of the training steps on one thread (a shared 2-core machine); the "
             "checkpoint is `model.safetensors` (adapter checkpoints hold only the trained tensors; `model.onnx` "
             "is the whole network either way).", "",
             "| method | k | accuracy | trainable | trainable % | CPU min (training) | checkpoint |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(grid, key=lambda r: (r["shots"], METHODS.index(r["method"]))):
        lines.append(f"| {r['method']} | {r['shots']} | {100 * r['accuracy']['1']:.1f} % | {r['trainable']:,} | "
                     f"{r['trainable_percent']:.2f} % | {r['cpu_minutes_training']:.1f} | "
                     f"{r['checkpoint_bytes'] / 1024:.0f} KiB |")
    if vary:
        lines += ["", "Variable window length: AAT, k = 8, trained on windows drawn from 0.5-5 s; accuracy when "
                  "tagging with each window length (same test clips).", "",
                  "| run | " + " | ".join(f"{w:g} s" for w in WINDOWS) + " |", "|---|" + "---:|" * len(WINDOWS)]
        for r in vary:
            lines.append(f"| {r['name']} | " + " | ".join(f"{100 * r['accuracy'][f'{w:g}']:.1f} %" for w in WINDOWS)
                         + " |")
    (out.parent / f"{out.name}.md").write_text("\n".join(lines) + "\n")
    (out.parent / f"{out.name}.json").write_text(json.dumps(rows, indent=1))
    _plot(grid, vary, out.parent / f"{out.name}.png")
    print("\n".join(lines))


def _plot(grid: list[dict], vary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if vary else 1, figsize=(11 if vary else 6, 4), squeeze=False)
    a = axes[0, 0]
    for m in METHODS:
        rs = sorted((r for r in grid if r["method"] == m), key=lambda r: r["shots"])
        if rs:
            a.plot([r["shots"] for r in rs], [100 * r["accuracy"]["1"] for r in rs], "o-",
                   label=f"{m} ({rs[0]['trainable_percent']:.1f} % trained)")
    a.set_xlabel("training clips per new class (k)")
    a.set_ylabel("fold-4 accuracy, 10 new classes (%)")
    a.set_ylim(0, 100)
    a.legend()
    a.set_title("retargeting the detector")
    if vary:
        b = axes[0, 1]
        for r in vary:
            b.plot(WINDOWS, [100 * r["accuracy"][f"{w:g}"] for w in WINDOWS], "o-", label=r["name"])
        b.set_xscale("log")
        b.set_xticks(WINDOWS, [f"{w:g}" for w in WINDOWS])
        b.set_xlabel("window when tagging (s)")
        b.set_ylim(0, 100)
        b.legend()
        b.set_title("AAT, k = 8, trained on 0.5-5 s windows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(ROOT / "runs/peft/base40/final"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/esc50"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--shots", type=int, nargs="*", default=[])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--spatial", action="store_true", help="the variable-window runs (with and without the spatial "
                                                           "adapter)")
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(a.out)
    for k in a.shots:
        for m in a.methods:
            run_one(f"k{k}_{m}", a.base, a.data, out, m, k, a.epochs, [1.0])
    if a.spatial:
        vary = {"vary_window": 1.0, "min_window_s": 0.5, "max_window_s": 5.0}
        for name, spatial in (("vary_aat_spatial", True), ("vary_aat_no_spatial", False)):
            run_one(name, a.base, a.data, out, "aat", 8, a.epochs, WINDOWS,
                    adapter_kwargs={"spatial_adapter": spatial}, **vary)
    if a.report:
        report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
