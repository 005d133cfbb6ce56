"""``aed evaluate``: clip-level metrics on labelled clips, event-level metrics on soundscapes.

Both go through an inference engine and the real-time ``Detector``, so that they measure what a user runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from apps.common import add_detector_args, add_model_args, detector_config, open_engine
from apps.errors import UserError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model: clip accuracy/mAP, event F1, PSDS, latency",
                       description="Clip level: each clip's window scores (Detector.clip_scores) are averaged; "
                                   "accuracy, mAP, a per-class table and a confusion-matrix PNG. Event level "
                                   "(--soundscapes): audio streamed through the Detector in 100 ms chunks; "
                                   "event-based F1 (200 ms onset collar, offset collar max(200 ms, 20 %)), "
                                   "segment-based F1 (1 s), PSDS where sed_scores_eval is installed, and the "
                                   "latency from event onset to emitted onset.")
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help=argparse.SUPPRESS)   # older spelling of --model
    p.add_argument("--data", help="clip-level data (e.g. ../shared/data/esc50); omit to skip clip level")
    p.add_argument("--layout", choices=["esc50", "folder"], default="esc50")
    p.add_argument("--folds", default="4", help="ESC-50 folds to evaluate (default: 4)")
    p.add_argument("--licenses", default="all", help="ESC-50 licences to keep (default: all)")
    p.add_argument("--max-clips", type=int, help="evaluate at most this many clips / soundscapes")
    p.add_argument("--soundscapes", metavar="DIR", help="soundscape folder (audio/ + labels.tsv) for event level")
    p.add_argument("--synthesise", type=int, metavar="N",
                   help="first write N soundscapes into --soundscapes from --events-data (fold --folds)")
    p.add_argument("--events-data", default="../shared/data/esc50", help="event clips for --synthesise")
    p.add_argument("--noise-dir", default="../shared/data/noise", help="backgrounds for --synthesise")
    p.add_argument("--seed", type=int, default=0, help="synthesis seed")
    p.add_argument("-o", "--out", default="runs/evaluate", help="report directory (default: runs/evaluate)")
    add_model_args(p)
    add_detector_args(p)
    p.set_defaults(func=run)


def _folds(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--folds expects comma-separated integers, got {text!r}") from None


def _clip_level(det, args: argparse.Namespace, labels: list[str], out: Path) -> dict:
    import numpy as np

    from models.training.data import decode_items, load_esc50, load_folder
    from models.training.evaluate import write_clip_report

    lic = None if args.licenses.lower() == "all" else [s for s in args.licenses.split(",") if s]
    try:
        ds = (load_esc50(args.data, folds=_folds(args.folds), licenses=lic) if args.layout == "esc50"
              else load_folder(args.data, labels=labels))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if ds.labels != labels:
        raise UserError(f"the data's labels ({len(ds.labels)}) differ from the model's ({len(labels)})")
    items = ds.items[:args.max_clips] if args.max_clips else ds.items
    waves, kept, report = decode_items(items, det.input_rate)
    skipped = list(report.skipped)
    scores, targets, first_error = [], [], None
    for wave, item in zip(waves, kept):
        try:
            scores.append(det.clip_scores(wave))
        except ValueError as e:  # AudioError: e.g. too short for one frame; named, and the run goes on
            log.warning("skipping %s (%s)", item.path.name, e)
            skipped.append(str(item.path))
            first_error = first_error or f"{item.path.name}: {e}"
            continue
        targets.append(item.label)
    if not scores:
        raise UserError(f"no clips in {args.data} could be scored ({len(skipped)} skipped: unreadable or too short"
                        + (f"; first: {first_error})" if first_error else ")"))
    if len(skipped) > report.count:
        log.warning("skipped %d file(s) of %d (unreadable or too short to score)", len(skipped), len(items))
    return write_clip_report(np.stack(scores), np.array(targets), labels, out,
                             extra={"skipped_files": skipped, "window_s": det.window_s, "hop_s": det.hop_s})


def _no_nan(obj):
    """NaN (an undefined metric, e.g. F1 with no detection) becomes null, so that the report is valid JSON."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def trained_on(config, folds: list[int]) -> list[int]:
    """The ESC-50 folds among ``folds`` that the model's training record says it was trained on."""
    rec = dict(getattr(config, "training", None) or {})
    trained = set(rec.get("train_folds") or [])
    for key in ("train_config", "sed_config"):
        trained |= set((rec.get(key) or {}).get("train_folds") or [])
    return sorted(set(folds) & {int(f) for f in trained if isinstance(f, int) or str(f).isdigit()})


def run(args: argparse.Namespace) -> int:
    from realtime import Detector

    if args.model_pos is not None:
        if args.model is not None and args.model != args.model_pos:
            raise UserError(f"two models given: {args.model_pos} and --model {args.model}; pass one, with --model")
        args.model = args.model_pos
    if not args.data and not args.soundscapes:
        raise UserError("nothing to evaluate: give --data (clip level) and/or --soundscapes (event level)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = open_engine(args)
    det = Detector(engine, detector_config(args, engine))
    labels = list(engine.labels)
    summary: dict = {"model": str(args.model or "default"), "engine": getattr(engine, "name", args.engine)}
    seen = trained_on(engine.config, _folds(args.folds)) if (args.layout == "esc50" or args.synthesise) else []
    if seen:
        summary["warning"] = (f"the model was trained on ESC-50 fold(s) {seen}, which this run evaluates: the "
                              "figures measure training data, not clips the model has never heard")
        print(f"aed evaluate: WARNING: {summary['warning']}. Evaluate a model on folds outside its "
              f"training folds for honest figures.", file=sys.stderr)
    if args.data:
        summary["clip"] = _clip_level(det, args, labels, out)
    if args.soundscapes:
        from models.training.events import evaluate_soundscapes

        scapes = Path(args.soundscapes)
        if args.synthesise:
            from models.training.data import load_esc50
            from models.training.synth import synthesise

            noise = sorted(str(p) for p in Path(args.noise_dir).glob("*.flac")) if Path(args.noise_dir).is_dir() else []
            if not noise:
                raise UserError(f"no background recordings (*.flac) in {args.noise_dir}")
            ev = load_esc50(args.events_data, folds=_folds(args.folds), licenses=None)
            synthesise(ev, noise, scapes, args.synthesise, seed=args.seed)
        if not (scapes / "labels.tsv").is_file():
            raise UserError(f"no labels.tsv in {scapes} (write soundscapes with --synthesise N)")
        res = evaluate_soundscapes(det, scapes, max_files=args.max_clips)
        (out / "detected.json").write_text(json.dumps(res.pop("detected"), indent=1))
        summary["events"] = res
    engine.close()
    summary = _no_nan(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0
