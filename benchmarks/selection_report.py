"""Side-by-side table of selection runs from their ``eval.json`` files (``benchmarks/eval_detector.py``).

Usage:
    python benchmarks/selection_report.py benchmarks/results/selection/datar_mn04 benchmarks/results/selection/mn04_v2
        [--latency benchmarks/results/mobilenet.json] > benchmarks/results/selection/README.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _f(v, nd=3):
    return "—" if v is None or v != v else f"{v:.{nd}f}"


def _refine(th: dict) -> str:
    kind = th.get("onset_refine", "none")
    return kind if kind == "none" else f"{kind} {th.get('onset_lookback_s', 1.0)} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args(argv)
    runs = [(Path(d).name, json.loads((Path(d) / "eval.json").read_text())) for d in a.dirs]
    print("# Selection runs: trained on ESC-50 folds 1-3 (CC0/CC-BY clips), evaluated on held-out data\n")
    print("Produced by `benchmarks/eval_detector.py` (one file per run, `eval.json`; the command is recorded in it) and "
          "tabulated by `python benchmarks/selection_report.py " + " ".join(a.dirs) + "`.\n")
    print("Held out: all 400 fold-4 clips (clip accuracy); soundscapes from fold-4 clips over the last 30 % of each "
          "background recording (20 for tuning, 40 for testing, disjoint `src_file` halves); about ten minutes of "
          "negatives (silence, dither, generated noise at -60/-40/-20 dBFS, held-out recording stretches, espeak-ng "
          "speech with voices and sentences not used in training). ONNX Runtime, one thread, 1 s windows, 0.1 s hop, "
          "audio streamed in 100 ms chunks through `realtime.Detector`.\n")
    print("| run | onset source | clip acc. fold 4 | segment F1 (1 s) | onset event F1 (200 ms) | PSDS1 | "
          "onset latency p50 (s) | events found | false events / h on negatives | "
          "threshold, merge gap, backdate, onset refine |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in runs:
        for src in ("frames", "max", "ola", "clip"):
            if src not in r or "test" not in r[src]:
                continue
            t, th, neg = r[src]["test"], r[src]["thresholds"], r[src]["negatives"]
            print(f"| {name} | {src} | {100 * r['clip_accuracy_fold4']:.2f} % | {_f(t['segment_f1'])} | "
                  f"{_f(t['event_f1_onset'])} | {_f(t.get('psds1'))} | {_f(t['latency_median_s'], 2)} | "
                  f"{t['events_found']}/{t['reference_events']} ({100 * t['found_fraction']:.0f} %) | "
                  f"{neg['per_hour']:.1f} ({neg['events']} in {neg['seconds'] / 60:.1f} min) | "
                  f"{th['default']}, {th['merge_gap_s']} s, {th['backdate_onsets']}, {_refine(th)} |")
    print("\nFalse events per hour on each kind of negative (onset sources `max` and `ola`, what the runs ship "
          "with):\n")
    kinds = sorted({k for _, r in runs for src in ("max", "ola") if src in r for k in r[src]["negatives"]["per_kind"]})
    print("| run | source | " + " | ".join(kinds) + " |")
    print("|---|---|" + "---:|" * len(kinds))
    for name, r in runs:
        for src in ("max", "ola"):
            if src not in r:
                continue
            pk = r[src]["negatives"]["per_kind"]
            cells = [f"{pk[k]['per_hour']:.0f}" if k in pk else "—" for k in kinds]
            print(f"| {name} | {src} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
