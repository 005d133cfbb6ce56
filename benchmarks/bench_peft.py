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
    python benchmarks/bench_peft.py --base runs/peft/base40/final --shots 4 8 --seeds 0 1 2
    python benchmarks/bench_peft.py --base runs/peft/base40/final --spatial
    python benchmarks/bench_peft.py --report
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import re
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


def false_events(model_dir: Path, cache: Path) -> dict:
    """Onsets per hour on the held-out negatives (silence, dither, noise, recordings, speech) with the run's own
    thresholds: a retargeted detector must still say nothing when none of its sounds is there."""
    from engines import create_engine
    from models.training.sed_eval import false_events_per_hour, negative_streams, record_trace
    from realtime import Detector

    eng = create_engine("onnxruntime", model_dir, intra_op_num_threads=1)
    det = Detector(eng)
    neg = negative_streams(det.config.frontend, str(ROOT.parent / "shared/data/noise"), cache)
    res = false_events_per_hour(det, {k: record_trace(det, x, k) for k, x in neg.items()})
    return {"per_hour": res["per_hour"], "events": res["events"], "minutes": res["seconds"] / 60,
            "per_kind": {k: v["events"] for k, v in res["per_kind"].items()}}


def run_one(name: str, base: str, data: str, out: Path, method: str, shots: int, epochs: int, windows: list[float],
            seed: int = 0, **extra) -> dict:
    from models.training.retarget import RetargetConfig, retarget

    path = out / "runs" / f"{name}.json"
    if path.is_file():
        log.info("%s: done before (%s)", name, path)
        return json.loads(path.read_text())
    cfg = RetargetConfig(init=base, peft=method, data=data, layout="esc50", classes=HELD_OUT, shots=shots,
                         out=str(ROOT / "runs" / "peft" / name), epochs=epochs, threads=1, seed=seed, **extra)
    res = retarget(cfg)
    from models.io import read_config

    prov = read_config(res.out).training
    waves, targets = _test_set(data, res.labels)
    row = {"name": name, "method": method, "shots": shots, "seed": seed, "classes": len(res.labels), "train_clips": prov["train_clips"],
           "test_clips": len(targets), "trainable": res.trainable, "total": res.total,
           "trainable_percent": 100 * res.fraction, "cpu_minutes_training": prov["cpu_minutes_training"],
           "cpu_minutes_total": res.cpu_minutes, "checkpoint_bytes": res.checkpoint_bytes,
           "onnx_bytes": (res.out / "model.onnx").stat().st_size, "steps": prov["steps"],
           "accuracy": {f"{w:g}": accuracy(res.out, waves, targets, w) for w in windows},
           "false_events": false_events(res.out, ROOT / "runs" / "cache"), "thresholds": res.thresholds, "settings": {k: v for k, v in cfg.to_dict().items() if k != "classes"},
           "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, torch 1 thread"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    log.info("%s: %s", name, {k: row[k] for k in ("accuracy", "trainable_percent", "cpu_minutes_training")})
    return row


def report(out: Path) -> None:
    rows = []
    for p in sorted((out / "runs").glob("*.json")):
        r = json.loads(p.read_text())
        model_dir = ROOT / "runs" / "peft" / r["name"] / "final"
        if "false_events" not in r and model_dir.is_dir():      # runs recorded before this measure existed
            r["false_events"] = false_events(model_dir, ROOT / "runs" / "cache")
            p.write_text(json.dumps(r, indent=1))
        rows.append(r)
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
             "Each row is the mean over the seeds run (a seed draws the k clips and the training randomness); the "
             "accuracy of each seed is in brackets.", "",
             "False events: onsets per hour on about ten minutes of held-out negatives (silence, dither, generated "
             "noise, held-out stretches of the noise recordings, espeak-ng speech) with the thresholds each run set "
             "from its own clips.", "",
             "| method | k | accuracy (mean) | per seed | false events / h | trainable | trainable % | "
             "CPU min (training) | checkpoint |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    cells: dict[tuple[int, str], list[dict]] = {}
    for r in grid:
        cells.setdefault((r["shots"], r["method"]), []).append(r)
    for (k, m), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]))):
        accs = [100 * r["accuracy"]["1"] for r in sorted(rs, key=lambda r: r.get("seed", 0))]
        r = rs[0]
        fph = [x["false_events"]["per_hour"] for x in rs if "false_events" in x]
        lines.append(f"| {m} | {k} | {np.mean(accs):.1f} % | {', '.join(f'{a:.1f}' for a in accs)} | "
                     f"{np.mean(fph) if fph else float('nan'):.0f} | {r['trainable']:,} | {r['trainable_percent']:.2f} % | "
                     f"{np.mean([x['cpu_minutes_training'] for x in rs]):.1f} | {r['checkpoint_bytes'] / 1024:.0f} KiB |")
    groups = _vary_groups(vary)
    if groups:
        lines += ["", "Variable window length: AAT, k = 8, trained on windows drawn from 0.5-5 s, with and without the "
                  "spatial adapter; accuracy when tagging with each window length (same test clips; mean over seeds, "
                  "each seed in brackets).", "",
                  "| run | seeds | " + " | ".join(f"{w:g} s" for w in WINDOWS) + " |",
                  "|---|---:|" + "---:|" * len(WINDOWS)]
        for g, rs in groups.items():
            cells = []
            for w in WINDOWS:
                accs = [100 * r["accuracy"][f"{w:g}"] for r in rs]
                cells.append(f"{np.mean(accs):.1f} % ({', '.join(f'{x:.1f}' for x in accs)})")
            lines.append(f"| {g} | {len(rs)} | " + " | ".join(cells) + " |")
    (out.parent / f"{out.name}.md").write_text("\n".join(lines) + "\n")
    (out.parent / f"{out.name}.json").write_text(json.dumps(rows, indent=1))
    _plot(grid, vary, out.parent / f"{out.name}.png")
    print("\n".join(lines))


def _vary_groups(vary: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in sorted(vary, key=lambda r: r.get("seed", 0)):
        groups.setdefault(re.sub(r"_s\d+$", "", r["name"]), []).append(r)
    return groups


def _plot(grid: list[dict], vary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if vary else 1, figsize=(11 if vary else 6, 4), squeeze=False)
    a = axes[0, 0]
    for m in METHODS:
        rs = [r for r in grid if r["method"] == m]
        ks = sorted({r["shots"] for r in rs})
        if ks:
            means = [np.mean([100 * r["accuracy"]["1"] for r in rs if r["shots"] == k]) for k in ks]
            line, = a.plot(ks, means, "o-", label=f"{m} ({rs[0]['trainable_percent']:.1f} % trained)")
            a.scatter([r["shots"] for r in rs], [100 * r["accuracy"]["1"] for r in rs], s=10, color=line.get_color(),
                      alpha=0.5)
    a.set_xlabel("training clips per new class (k)")
    a.set_ylabel("fold-4 accuracy, 10 new classes (%)")
    a.set_ylim(50, 100)
    a.set_xticks(sorted({r["shots"] for r in grid}))
    a.legend()
    a.set_title("retargeting the detector")
    if vary:
        b = axes[0, 1]
        for g, rs in _vary_groups(vary).items():
            b.plot(WINDOWS, [np.mean([100 * r["accuracy"][f"{w:g}"] for r in rs]) for w in WINDOWS], "o-",
                   label=f"{g} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        b.set_xscale("log")
        b.minorticks_off()                       # log-axis minor labels would overlap the window lengths
        b.set_xticks(WINDOWS, [f"{w:g}" for w in WINDOWS])
        b.set_xlabel("window when tagging (s)")
        b.set_ylim(50, 100)
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="clip draws (and training seeds) per cell")
    ap.add_argument("--spatial", action="store_true", help="the variable-window runs (with and without the spatial "
                                                           "adapter)")
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(a.out)
    for seed in a.seeds:
        for k in a.shots:
            for m in a.methods:
                name = f"k{k}_{m}" + (f"_s{seed}" if seed else "")
                run_one(name, a.base, a.data, out, m, k, a.epochs, [1.0], seed=seed)
    if a.spatial:
        vary = {"vary_window": 1.0, "min_window_s": 0.5, "max_window_s": 5.0}
        for seed in a.seeds:
            for name, spatial in (("vary_aat_spatial", True), ("vary_aat_no_spatial", False)):
                run_one(name + (f"_s{seed}" if seed else ""), a.base, a.data, out, "aat", 8, a.epochs, WINDOWS,
                        seed=seed, adapter_kwargs={"spatial_adapter": spatial}, **vary)
    if a.report:
        report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
