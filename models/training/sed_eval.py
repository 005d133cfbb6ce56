"""Evaluation of a detector as users meet it: streamed audio in, events out, through ``realtime.Detector``.

- clip accuracy: :meth:`realtime.Detector.clip_scores` (the runtime's windowing) on held-out clips;
- soundscapes: held-out event clips mixed over held-out stretches of real noise (:mod:`.synth`), streamed in
  100 ms chunks; segment F1 (1 s), event F1 onset-only (200 ms collar) and with offsets (sed_eval), PSDS1
  (``psds_eval``: DTC = GTC = 0.7, no cross-trigger penalty, eFPR up to 100 per hour), onset latency from
  the reference onset to the moment the onset was emitted;
- negatives: streams with none of the classes (silence, dither, coloured noise, held-out noise recordings,
  synthetic speech): false events per hour, per kind.

The model runs once per file; every threshold setting then replays the recorded score trace through the
detector's own tracker (:meth:`realtime.Detector.accept`), which is what streaming would have produced.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data import StrongLabel, read_dcase_tsv

__all__ = ["Trace", "record_trace", "replay", "soundscape_metrics", "negative_streams", "false_events_per_hour",
           "onset_latency", "psds1", "tune_thresholds", "clip_accuracy"]

log = logging.getLogger(__name__)


@dataclass
class Trace:
    """One streamed file: the end frame and tracker scores of every window, the file's length, and the onset
    strength of every frame (for ``onset_refine="energy"``)."""

    name: str
    end_frames: np.ndarray         # (W,)
    scores: np.ndarray             # (W, C)
    duration_s: float
    onset_strength: np.ndarray | None = None   # (frames,)


def record_trace(detector: Any, audio: np.ndarray, name: str, chunk_s: float = 0.1) -> Trace:
    """Stream ``audio`` through ``detector`` in ``chunk_s`` chunks and keep what its tracker saw."""
    from realtime.detector import PendingWindow
    from realtime.onsets import OnsetEnvelope

    ends: list[int] = []
    scores: list[np.ndarray] = []
    detector.reset()
    step = max(1, int(round(chunk_s * detector.input_rate)))
    orig, orig_frames = detector.tracker_scores, detector.on_frames
    env = OnsetEnvelope(lag=detector.onsets.lag, keep=None, min_strength=detector.onsets.min_strength)

    def spy(window: PendingWindow, raw: np.ndarray) -> np.ndarray:
        out = orig(window, raw)
        ends.append(window.end_frame)
        scores.append(np.asarray(out, np.float32))
        return out

    def frames_spy(frames: np.ndarray) -> None:
        env.push(frames)
        if orig_frames is not None:
            orig_frames(frames)

    detector.tracker_scores, detector.on_frames = spy, frames_spy
    try:
        for i in range(0, len(audio), step):
            detector.push(audio[i:i + step])
        detector.flush()
    finally:
        detector.tracker_scores, detector.on_frames = orig, orig_frames
    c = len(detector.labels)
    return Trace(name, np.asarray(ends, np.int64), np.stack(scores) if scores else np.zeros((0, c), np.float32),
                 len(audio) / detector.input_rate, env.values())


def replay(detector: Any, trace: Trace) -> tuple[list[StrongLabel], list[tuple[str, float, float]]]:
    """Events of ``trace`` under ``detector``'s settings: closed events and ``(label, onset_s, emitted_at_s)``."""
    from realtime.detector import PendingWindow

    detector.reset()
    if trace.onset_strength is not None:
        detector.onsets.load(trace.onset_strength)
    fs = detector.config.frontend.frame_shift_ms / 1000.0
    closed, emitted = [], []
    for e_frame, s in zip(trace.end_frames, trace.scores):
        for ev in detector.accept_tracked([PendingWindow(int(e_frame), None)], s[None]):
            if ev.kind == "onset":
                emitted.append((ev.label, ev.onset_s, e_frame * fs))
            elif ev.offset_s is not None:
                closed.append(StrongLabel(trace.name, ev.onset_s, ev.offset_s, ev.label))
    for ev in detector.tracker.flush(trace.duration_s):
        if ev.offset_s is not None:
            closed.append(StrongLabel(trace.name, ev.onset_s, min(ev.offset_s, trace.duration_s), ev.label))
    return closed, emitted


def onset_latency(reference: Sequence[StrongLabel], emitted: Mapping[str, list[tuple[str, float, float]]],
                  collar_s: float = 0.2) -> dict[str, float]:
    """Median / p90 time from a reference onset to the first matching emitted onset, and the share found.

    An emission matches a reference event of its label when its onset lies in ``[onset - collar, offset]``.
    """
    from .events import latency_stats

    out = latency_stats(reference, dict(emitted), collar_s)   # the one matching rule of aed's event evaluation
    found = out.pop("latency_events")
    return {**out, "events_found": found, "found_fraction": float(found / max(1, len(reference)))}


def _sed_eval(reference: Sequence[StrongLabel], estimated: Sequence[StrongLabel], labels: Sequence[str],
              files: Sequence[str]) -> dict[str, float]:
    import dcase_util
    import sed_eval

    def cont(rows):
        return dcase_util.containers.MetaDataContainer(
            [{"filename": r.filename, "onset": r.onset, "offset": r.offset, "event_label": r.event_label}
             for r in rows])

    onset_only = sed_eval.sound_event.EventBasedMetrics(list(labels), t_collar=0.2, evaluate_onset=True,
                                                        evaluate_offset=False)
    full = sed_eval.sound_event.EventBasedMetrics(list(labels), t_collar=0.2, percentage_of_length=0.2,
                                                  evaluate_onset=True, evaluate_offset=True)
    seg = sed_eval.sound_event.SegmentBasedMetrics(list(labels), time_resolution=1.0)
    for f in files:
        ref = cont([r for r in reference if r.filename == f])
        est = cont([r for r in estimated if r.filename == f])
        for m in (onset_only, full, seg):
            m.evaluate(reference_event_list=ref, estimated_event_list=est)
    o, e, s = (m.results_overall_metrics() for m in (onset_only, full, seg))
    return {"segment_f1": float(s["f_measure"]["f_measure"]), "segment_precision": float(s["f_measure"]["precision"]),
            "segment_recall": float(s["f_measure"]["recall"]),
            "event_f1_onset": float(o["f_measure"]["f_measure"]), "event_precision_onset":
                float(o["f_measure"]["precision"]), "event_recall_onset": float(o["f_measure"]["recall"]),
            "event_f1_onset_offset": float(e["f_measure"]["f_measure"])}


def soundscape_metrics(detector: Any, traces: Sequence[Trace], reference: Sequence[StrongLabel]) -> dict[str, Any]:
    """Segment and event F1 and onset latency of ``traces`` under ``detector``'s settings."""
    estimated, emitted = [], {}
    for tr in traces:
        ev, em = replay(detector, tr)
        estimated += ev
        emitted[tr.name] = em
    files = [t.name for t in traces]
    ref = [r for r in reference if r.filename in set(files)]
    out = _sed_eval(ref, estimated, detector.labels, files)
    out.update(onset_latency(ref, emitted))
    out["estimated_events"] = len(estimated)
    return out


def psds1(detector: Any, traces: Sequence[Trace], reference: Sequence[StrongLabel],
          thresholds: Sequence[float] = tuple(np.linspace(0.05, 0.95, 19))) -> dict[str, Any]:
    """PSDS scenario 1 (DCASE 2021-23: DTC = GTC = 0.7, alpha_ct = 0, alpha_st = 1, eFPR <= 100/h) with psds_eval.

    Each threshold is one operating point: the tracker's events at that (single, all-class) threshold.
    """
    try:
        import pandas as pd
        from psds_eval import PSDSEval
    except ImportError as e:
        return {"psds1": None, "psds_note": f"psds_eval is not installed ({e})"}
    names = {t.name for t in traces}
    gt = pd.DataFrame([{"filename": r.filename, "onset": r.onset, "offset": r.offset, "event_label": r.event_label}
                       for r in _merge_overlaps([r for r in reference if r.filename in names])])
    meta = pd.DataFrame([{"filename": t.name, "duration": t.duration_s} for t in traces])
    ev = _PSDSEval(PSDSEval)(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=0.3, ground_truth=gt, metadata=meta)
    for th in thresholds:
        det = detector.with_config(threshold=float(th), thresholds={})
        rows = []
        for tr in traces:
            closed, _ = replay(det, tr)
            rows += [{"filename": r.filename, "onset": r.onset, "offset": r.offset, "event_label": r.event_label}
                     for r in closed]
        df = pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label"])
        ev.add_operating_point(df, info={"threshold": float(th)})
    res = ev.psds(alpha_ct=0.0, alpha_st=1.0, max_efpr=100)
    return {"psds1": float(res.value), "psds_note": "overlapping reference events of one class merged (psds_eval "
                                                    "refuses them)"}


def _PSDSEval(base: type) -> type:
    """psds_eval 0.5.3's ``PSDSEval`` with its area-under-curve step fixed for NumPy 2.

    Its ``_auc`` converts a ``(1, 1)`` array to ``int``, which NumPy 2 refuses whenever the eFPR limit is not one of
    the curve's points. The area under the step curve ``y(x)`` up to ``max_x`` is computed here instead.
    """

    class Fixed(base):
        @staticmethod
        def _auc(x, y, max_x=None, decreasing_y=False):
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            max_x = float(x.max()) if max_x is None else float(max_x)
            if max_x not in x:                     # extend the step to max_x with the value holding there
                i = int(np.searchsorted(x, max_x))
                x, y = np.insert(x, i, max_x), np.insert(y, i, y[max(i - 1, 0)])
            keep = x <= max_x
            return float(np.sum(np.diff(x[keep]) * y[keep][:-1]))

    return Fixed


def _merge_overlaps(rows: Sequence[StrongLabel]) -> list[StrongLabel]:
    """Reference events with overlapping same-class events of one file merged into one."""
    out: list[StrongLabel] = []
    for r in sorted(rows, key=lambda r: (r.filename, r.event_label, r.onset)):
        last = out[-1] if out else None
        if last and last.filename == r.filename and last.event_label == r.event_label and r.onset <= last.offset:
            out[-1] = StrongLabel(r.filename, last.onset, max(last.offset, r.offset), r.event_label)
        else:
            out.append(r)
    return out


def negative_streams(fe: Any, noise_dir: str | Path | None, cache_dir: str | Path, seed: int = 1
                     ) -> dict[str, np.ndarray]:
    """About ten minutes of held-out audio with none of the classes, by kind (16 kHz mono float32).

    Silence (90 s), 1-LSB dither (60 s), white/pink/brown noise at -60, -40 and -20 dBFS (30 s each), the held-out
    last 30 % of each background recording at its recorded level, and the evaluation split of espeak-ng speech
    (voices and sentences not used in training) joined with 0.3 s of silence between sentences.
    """
    from .sed_data import SPEECH_EVAL, build_negative_bank, coloured_noise, dither, speech_clips

    rng = np.random.default_rng(seed + 77)
    out: dict[str, np.ndarray] = {"silence": np.zeros(16000 * 90, np.float32), "dither": dither(60.0, rng)}
    for kind in ("white", "pink", "brown"):
        out[f"generated_{kind}_noise"] = np.concatenate([coloured_noise(kind, 30.0, rng, db)
                                                         for db in (-60.0, -40.0, -20.0)])
    bank = build_negative_bank(fe, noise_dir, "eval", cache_dir, keep_audio=True, seed=seed)
    for kind, clips in bank.audio.items():
        if kind.startswith("recording:"):
            out["recording_" + kind.split(":", 1)[1]] = np.concatenate(clips)
    speech = speech_clips(SPEECH_EVAL, Path(cache_dir) / "speech-eval", np.random.default_rng(seed + 1000))
    if speech:
        gap = np.zeros(4800, np.float32)
        out["speech"] = np.concatenate([np.concatenate([s, gap]) for s in speech])
    return out


def false_events_per_hour(detector: Any, traces: Mapping[str, Trace]) -> dict[str, Any]:
    """Onsets emitted on each negative stream, per hour of audio, and over all of them."""
    per, total_ev, total_s = {}, 0, 0.0
    for kind, tr in traces.items():
        _, emitted = replay(detector, tr)
        per[kind] = {"events": len(emitted), "seconds": tr.duration_s,
                     "per_hour": len(emitted) / tr.duration_s * 3600.0,
                     "labels": sorted({e[0] for e in emitted})[:5]}
        total_ev += len(emitted)
        total_s += tr.duration_s
    return {"per_kind": per, "events": total_ev, "seconds": total_s, "per_hour": total_ev / max(total_s, 1e-9) * 3600,
            "per_minute": total_ev / max(total_s, 1e-9) * 60}


def tune_thresholds(detector: Any, traces: Sequence[Trace], reference: Sequence[StrongLabel],
                    negatives: Mapping[str, Trace] | None = None,
                    grid: Sequence[float] = tuple(np.round(np.arange(0.2, 0.96, 0.05), 2)),
                    merge_gaps: Sequence[float] = (0.0, 0.3, 0.6, 1.0), max_false_per_hour: float = 30.0,
                    min_support: int = 3, backdate: Sequence[bool] = (False, True),
                    onset_refines: Sequence[tuple[str, float]] = (("none", 1.0),)) -> dict[str, Any]:
    """A default threshold, a merge gap, an onset stamping rule and per-class thresholds from validation soundscapes.

    The default threshold, merge gap, backdating and onset refinement (``(onset_refine, onset_lookback_s)`` pairs)
    maximise the mean of segment F1 and onset event F1, among settings whose false-event rate on ``negatives``
    (training-split negatives) stays under ``max_false_per_hour``. A class with at least ``min_support``
    reference events gets its own threshold (its best segment F1), halfway between that and the default; the rest
    keep the default.
    """
    # the starting point is what is kept where no setting meets the false-event limit
    best, table = -1.0, []
    chosen = {"threshold": float(grid[len(grid) // 2]), "merge_gap_s": 0.0, "backdate_onsets": False,
              "onset_refine": onset_refines[0][0], "onset_lookback_s": float(onset_refines[0][1])}
    fph_at: dict[float, float] = {}
    for (refine, lookback), bd, gap, th in itertools.product(onset_refines, backdate, merge_gaps, grid):
        settings = {"threshold": float(th), "merge_gap_s": float(gap), "backdate_onsets": bool(bd),
                    "onset_refine": refine, "onset_lookback_s": float(lookback)}
        det = detector.with_config(thresholds={}, **settings)
        m = soundscape_metrics(det, traces, reference)
        if negatives and float(th) not in fph_at:   # onsets emitted depend on the threshold alone
            fph_at[float(th)] = false_events_per_hour(det, negatives)["per_hour"]
        fph = fph_at.get(float(th), 0.0)
        score = 0.5 * (np.nan_to_num(m["segment_f1"]) + np.nan_to_num(m["event_f1_onset"]))
        table.append({**settings, "segment_f1": m["segment_f1"], "event_f1_onset": m["event_f1_onset"],
                      "false_per_hour": fph})
        if fph <= max_false_per_hour and score > best:
            best, chosen = score, settings
    per_class: dict[str, float] = {}
    labels = list(detector.labels)
    support = {lab: sum(1 for r in reference if r.event_label == lab) for lab in labels}
    files = [t.name for t in traces]
    for lab in labels:
        if support[lab] < min_support:
            continue
        ref = [r for r in reference if r.event_label == lab]
        f1s = []
        for th in grid:
            det = detector.with_config(**chosen, thresholds={lab: float(th)})
            ev = [e for tr in traces for e in replay(det, tr)[0] if e.event_label == lab]
            f1s.append(_class_segment_f1(ref, ev, files))
        per_class[lab] = round(0.5 * (float(grid[int(np.argmax(f1s))]) + chosen["threshold"]), 3)
    out = {k: v for k, v in chosen.items() if k != "threshold"}
    return {"default": round(chosen["threshold"], 3), **out, "per_class": per_class, "grid": table}


def _class_segment_f1(ref: Sequence[StrongLabel], est: Sequence[StrongLabel], files: Sequence[str]) -> float:
    tp = fp = fn = 0
    for f in files:
        r = {int(s) for x in ref if x.filename == f for s in np.arange(np.floor(x.onset), np.ceil(x.offset))}
        e = {int(s) for x in est if x.filename == f for s in np.arange(np.floor(x.onset), np.ceil(x.offset))}
        tp += len(r & e)
        fp += len(e - r)
        fn += len(r - e)
    return 2 * tp / max(1, 2 * tp + fp + fn)


def clip_accuracy(detector: Any, waves: Sequence[np.ndarray], targets: Sequence[int]) -> dict[str, Any]:
    """Top-1 accuracy of :meth:`realtime.Detector.clip_scores` (the clip head, mean over windows)."""
    scores = np.stack([detector.clip_scores(w) for w in waves])
    pred = np.argmax(scores, axis=1)
    t = np.asarray(targets)
    return {"accuracy": float(np.mean(pred == t)), "clips": int(len(t)), "scores": scores}
