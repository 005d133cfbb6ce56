"""Event-level evaluation on strongly labelled soundscapes, through the real streaming ``realtime.Detector``.

The audio is pushed in small chunks, as a microphone would deliver it, and every emitted onset is
stamped with the stream time at which it came out; detection latency is that time minus the
reference onset. Metrics:

- event-based F1 (``sed_eval``; 200 ms onset collar, offset collar max(200 ms, 20 % of the event));
- segment-based F1 on 1 s segments (``sed_eval``);
- PSDS (``sed_scores_eval``) when it is importable, else reported as unavailable with the reason;
- latency from reference onset to emitted onset: median and 90th percentile.

Example:
    >>> rows = [StrongLabel("a.wav", 1.0, 2.0, "dog")]
    >>> event_f1(rows, rows, ["dog"])["event_f1"]
    1.0
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from realtime.errors import AudioError

from .data import StrongLabel, read_audio_at, read_dcase_tsv

__all__ = ["StreamResult", "stream_detect", "event_f1", "latency_stats", "psds", "evaluate_soundscapes"]

log = logging.getLogger(__name__)


@dataclass
class StreamResult:
    """Events detected in one file: closed events, onset emission times and the score trace."""

    events: list[StrongLabel]
    emitted: list[tuple[str, float, float]]          # (label, onset_s, emitted_at_s)
    trace_t: np.ndarray                              # (W,) window end times
    trace: np.ndarray                                # (W, C) window scores


def stream_detect(detector: Any, audio: np.ndarray, filename: str, chunk_s: float = 0.1) -> StreamResult:
    """Push ``audio`` through ``detector`` in ``chunk_s`` chunks, recording when each onset is emitted."""
    sr = detector.input_rate
    step = max(1, int(round(chunk_s * sr)))
    times: list[float] = []
    scores: list[np.ndarray] = []
    prev = detector.on_window
    detector.on_window = lambda t, s: (times.append(float(t)), scores.append(np.asarray(s, dtype=np.float32)))
    try:
        detector.reset()
        events, emitted = [], []
        for i in range(0, len(audio), step):
            chunk = audio[i:i + step]
            now = (i + len(chunk)) / sr
            for e in detector.push(chunk):
                if e.kind == "onset":
                    emitted.append((e.label, e.onset_s, now))
                elif e.offset_s is not None:
                    events.append(StrongLabel(filename, e.onset_s, e.offset_s, e.label))
        for e in detector.flush():
            if e.kind == "onset":
                emitted.append((e.label, e.onset_s, len(audio) / sr))
            elif e.offset_s is not None:
                events.append(StrongLabel(filename, e.onset_s, e.offset_s, e.label))
    finally:
        detector.on_window = prev
    c = len(detector.labels)
    trace = np.stack(scores) if scores else np.zeros((0, c), np.float32)
    return StreamResult(events, emitted, np.asarray(times), trace)


def _event_list(rows: Sequence[StrongLabel]):
    import dcase_util

    return dcase_util.containers.MetaDataContainer(
        [{"filename": r.filename, "onset": r.onset, "offset": r.offset, "event_label": r.event_label} for r in rows])


def event_f1(reference: Sequence[StrongLabel], estimated: Sequence[StrongLabel], labels: Sequence[str],
             files: Sequence[str] | None = None, t_collar: float = 0.2, offset_pct: float = 0.2,
             segment_s: float = 1.0) -> dict[str, float]:
    """Event-based (collars) and segment-based (``segment_s`` segments) micro F1 with ``sed_eval``."""
    import sed_eval

    files = sorted(set(files or []) | {r.filename for r in reference} | {r.filename for r in estimated})
    ev = sed_eval.sound_event.EventBasedMetrics(event_label_list=list(labels), t_collar=t_collar,
                                                percentage_of_length=offset_pct, evaluate_onset=True,
                                                evaluate_offset=True)
    seg = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels), time_resolution=segment_s)
    for f in files:
        ref = _event_list([r for r in reference if r.filename == f])
        est = _event_list([r for r in estimated if r.filename == f])
        ev.evaluate(reference_event_list=ref, estimated_event_list=est)
        seg.evaluate(reference_event_list=ref, estimated_event_list=est)
    e, s = ev.results_overall_metrics(), seg.results_overall_metrics()
    return {"event_f1": float(e["f_measure"]["f_measure"]), "event_precision": float(e["f_measure"]["precision"]),
            "event_recall": float(e["f_measure"]["recall"]), "event_error_rate": float(e["error_rate"]["error_rate"]),
            "segment_f1": float(s["f_measure"]["f_measure"]), "segment_precision": float(s["f_measure"]["precision"]),
            "segment_recall": float(s["f_measure"]["recall"]), "segment_error_rate": float(s["error_rate"]["error_rate"])}


def latency_stats(reference: Sequence[StrongLabel], emitted: dict[str, list[tuple[str, float, float]]],
                  collar_s: float = 0.2) -> dict[str, float]:
    """Latency from a reference onset to the first emitted onset of the same label that matches it.

    An emitted onset matches when its onset time lies in ``[onset - collar_s, offset]`` of the reference
    event; each emission matches at most one reference event.

    Args:
        reference: reference events.
        emitted: per filename, ``(label, onset_s, emitted_at_s)`` emissions.
        collar_s: how early an emitted onset may be and still match.
    """
    lat = []
    used: set[tuple[str, int]] = set()
    for r in sorted(reference, key=lambda r: (r.filename, r.onset)):
        for k, (lab, on, at) in enumerate(emitted.get(r.filename, [])):
            if lab == r.event_label and (r.filename, k) not in used and r.onset - collar_s <= on <= r.offset:
                used.add((r.filename, k))
                lat.append(at - r.onset)
                break
    arr = np.asarray(lat)
    return {"latency_median_s": float(np.median(arr)) if len(arr) else float("nan"),
            "latency_p90_s": float(np.percentile(arr, 90)) if len(arr) else float("nan"),
            "latency_events": int(len(arr)), "reference_events": int(len(reference))}


def psds(traces: dict[str, tuple[np.ndarray, np.ndarray]], reference: Sequence[StrongLabel],
         durations: dict[str, float], labels: Sequence[str], hop_s: float) -> dict[str, Any]:
    """PSDS (DCASE 2021 scenario 1: DTC = GTC = 0.7, no cross-trigger, max eFPR 100/h) with ``sed_scores_eval``.

    Returns ``{"psds1": value}``, or ``{"psds1": None, "psds_note": why}`` where the package is unavailable.
    """
    try:
        from sed_scores_eval import intersection_based
        from sed_scores_eval.base_modules.scores import create_score_dataframe
    except ImportError as e:
        return {"psds1": None, "psds_note": f"sed_scores_eval is not installed ({e})"}
    scores = {}
    for name, (t, s) in traces.items():
        key = Path(name).stem
        if len(t) == 0:
            continue
        bounds = np.concatenate([[max(0.0, t[0] - hop_s)], t])  # window k scores the hop that ends at t[k]
        scores[key] = create_score_dataframe(np.array(s, dtype=np.float64), np.array(bounds, dtype=np.float64),
                                             event_classes=list(labels))
    gt = {Path(f).stem: [] for f in durations}
    for r in reference:
        gt[Path(r.filename).stem].append((r.onset, r.offset, r.event_label))
    dur = {Path(f).stem: d for f, d in durations.items()}
    try:
        value, *_ = intersection_based.psds(scores=scores, ground_truth=gt, audio_durations=dur, dtc_threshold=0.7,
                                            gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0,
                                            unit_of_time="hour", max_efpr=100.0)
    except (ValueError, TypeError) as e:
        # sed_scores_eval 0.0.4's Cython kernels reject the read-only arrays that pandas >= 3 hands out
        log.warning("sed_scores_eval failed to compute PSDS: %s", e)
        return {"psds1": None, "psds_note": f"sed_scores_eval failed: {e}"}
    return {"psds1": float(value)}


def evaluate_soundscapes(detector: Any, scape_dir: str | Path, chunk_s: float = 0.1,
                         max_files: int | None = None) -> dict[str, Any]:
    """Run ``detector`` over ``scape_dir/audio`` and score it against ``scape_dir/labels.tsv``.

    Returns:
        The metrics, the per-file detected events under ``"detected"`` (DCASE rows).
    """
    scape_dir = Path(scape_dir)
    reference = read_dcase_tsv(scape_dir / "labels.tsv")
    files = sorted(p for p in (scape_dir / "audio").iterdir() if p.is_file())
    if max_files:
        files = files[:max_files]
    names = {p.name for p in files}
    reference = [r for r in reference if r.filename in names]
    sr = detector.input_rate
    detected: list[StrongLabel] = []
    emitted: dict[str, list[tuple[str, float, float]]] = {}
    traces: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    durations: dict[str, float] = {}
    skipped = []
    for p in files:
        try:
            audio = read_audio_at(p, sr)
        except AudioError as e:
            log.warning("skipping unreadable soundscape %s (%s)", p.name, e)
            skipped.append(p.name)
            continue
        res = stream_detect(detector, audio, p.name, chunk_s)
        detected += res.events
        emitted[p.name] = res.emitted
        traces[p.name] = (res.trace_t, res.trace)
        durations[p.name] = len(audio) / sr
    labels = list(detector.labels)
    out: dict[str, Any] = {"files": len(durations), "skipped_files": skipped}
    out.update(event_f1(reference, detected, labels, files=list(durations)))
    out.update(latency_stats(reference, emitted))
    out.update(psds(traces, reference, durations, labels, detector.hop_s))
    out["detected"] = [r.__dict__ for r in detected]
    return out
