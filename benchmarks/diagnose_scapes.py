"""Where a detector's soundscape errors come from: each emitted event and each reference event sorted into a kind.

Streams the held-out test soundscapes that ``benchmarks/eval_detector.py`` made (its cache) through
``realtime.Detector`` with the thresholds that run tuned, and counts:

- emitted events: ``hit`` (onset within the 200 ms collar of a reference event of its class), ``late`` / ``early``
  (it overlaps a reference event of its class, but its onset is outside the collar), ``wrong_class`` (it overlaps
  only reference events of other classes), ``false`` (it overlaps no reference event);
- reference events: found with a hit, found only late/early, missed; and per missed event the best score its class
  reached while it sounded (was it near the threshold or nowhere).

Example:
    python benchmarks/diagnose_scapes.py --model runs/final_sel/final \\
        --thresholds benchmarks/results/selection/datar_mn04_no_early/thresholds_max.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines import create_engine  # noqa: E402
from models.training.data import read_audio, read_dcase_tsv  # noqa: E402
from models.training.sed_eval import record_trace, replay, soundscape_metrics  # noqa: E402
from realtime.detector import Detector, DetectorConfig  # noqa: E402

COLLAR_S = 0.2


def _near(on: float, off: float, ref) -> bool:
    """Whether an event ``[on, off]`` overlaps reference event ``ref`` widened by the collar on both sides."""
    return on < ref.offset + COLLAR_S and off > ref.onset - COLLAR_S


def classify(emitted, refs):
    """Kinds of emitted events ``(label, onset, offset)`` against the file's reference events."""
    kinds = []
    for lab, on, off in emitted:
        same = [r for r in refs if r.event_label == lab and _near(on, off, r)]
        if any(abs(on - r.onset) <= COLLAR_S for r in same):
            kinds.append("hit")
        elif same:
            kinds.append("late" if on > min(r.onset for r in same) else "early")
        elif any(on < r.offset and off > r.onset for r in refs):
            kinds.append("wrong_class")
        else:
            kinds.append("false")
    return kinds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--thresholds", required=True, help="thresholds_<source>.json written by eval_detector.py")
    ap.add_argument("--scapes", default=str(ROOT / "runs/cache/scapes-v4-test-40-12"))
    ap.add_argument("--source", default="max")
    ap.add_argument("--out", help="write the counts here as JSON")
    ap.add_argument("--sweep", action="store_true", help="also: segment / event F1 and latency over minimum "
                                                         "durations and thresholds (the test scapes themselves)")
    a = ap.parse_args(argv)
    th = json.loads(Path(a.thresholds).read_text())
    eng = create_engine("onnxruntime", a.model, intra_op_num_threads=1)
    cfg = DetectorConfig.from_model(eng.config).override(
        onset_source=a.source, early_windows=False, threshold=th["default"], thresholds=th["per_class"],
        merge_gap_s=th["merge_gap_s"], backdate_onsets=th["backdate_onsets"],
        onset_refine=th.get("onset_refine", "none"), onset_lookback_s=th.get("onset_lookback_s", 1.0))
    det = Detector(eng, cfg)
    scape = Path(a.scapes)
    refs = read_dcase_tsv(scape / "labels.tsv")
    labels = list(det.labels)
    fs = det.config.frontend.frame_shift_ms / 1000.0
    emitted_kinds: Counter = Counter()
    ref_kinds: Counter = Counter()
    onset_err, miss_peak, late_by, confusions = [], [], [], Counter()
    traces = []
    for path in sorted((scape / "audio").iterdir()):
        tr = record_trace(det, read_audio(path)[0], path.name)
        traces.append(tr)
        closed, _ = replay(det, tr)
        em = [(e.event_label, e.onset, e.offset) for e in closed]
        mine = [r for r in refs if r.filename == path.name]
        kinds = classify(em, mine)
        emitted_kinds.update(kinds)
        for (lab, on, off), k in zip(em, kinds):
            if k == "wrong_class":
                over = [r.event_label for r in mine if on < r.offset and off > r.onset]
                confusions[f"{over[0]} -> {lab}"] += 1
        t_end = tr.end_frames * fs
        for r in mine:
            same = [on for lab, on, off in em if lab == r.event_label and _near(on, off, r)]
            if any(abs(on - r.onset) <= COLLAR_S for on in same):
                ref_kinds["hit"] += 1
                onset_err.append(min((on - r.onset for on in same), key=abs))
            elif same:
                ref_kinds["found_off_collar"] += 1
                late_by.append(min(on - r.onset for on in same))
            else:
                ref_kinds["missed"] += 1
                span = (t_end > r.onset) & (t_end - det.window_s < r.offset)
                c = labels.index(r.event_label)
                miss_peak.append(float(tr.scores[span, c].max()) if span.any() else 0.0)
    res = {"model": a.model, "source": a.source, "emitted": dict(emitted_kinds), "reference": dict(ref_kinds),
           "hit_onset_error_median_s": float(np.median(onset_err)) if onset_err else None,
           "off_collar_onset_error_s": [round(x, 2) for x in sorted(late_by)],
           "missed_peak_score": [round(x, 2) for x in sorted(miss_peak)],
           "confusions": dict(confusions.most_common(15))}
    if a.sweep:
        res["sweep"] = []
        for md in (0.0, 0.1, 0.2, 0.3):
            for t in (th["default"] - 0.1, th["default"], th["default"] + 0.1):
                m = soundscape_metrics(det.with_config(threshold=round(t, 3), thresholds={}, min_duration_s=md),
                                       traces, refs)
                res["sweep"].append({"min_duration_s": md, "threshold": round(t, 3),
                                     **{k: round(float(m[k]), 3) for k in ("segment_f1", "event_f1_onset",
                                                                          "latency_median_s", "found_fraction")}})
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
