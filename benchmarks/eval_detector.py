"""Evaluate a trained detector end to end through the streaming ``realtime.Detector`` and ONNX Runtime.

Held-out data only: ESC-50 fold 4 (the selection runs never train on it), the last 30 % of each background
recording, coloured noise, dither, silence and espeak-ng speech with voices and sentences not used in training.

1. Clip accuracy on all 400 fold-4 clips (1 s windows, 0.1 s hop, mean of the clip head's window scores).
2. Fold 4 is split by ``src_file`` into a tuning half and a test half. Soundscapes (10 s, 1-3 events, SNR 6-24 dB
   over held-out noise) are made from each; thresholds are tuned on the tuning scapes (with the false-event rate
   on *training-split* negatives as a constraint) and every soundscape metric is reported on the test scapes,
   streamed in 100 ms chunks: segment F1 (1 s), onset-only event F1 (200 ms collar), PSDS1, onset latency.
3. False events per hour on about ten minutes of held-out negatives, per kind.

Both onset sources are measured side by side: the clip head's window score and the frame head's newest frame.

Usage:
    python benchmarks/eval_detector.py --model runs/sel_datar/final --out benchmarks/results/selection/datar_mn04
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines import create_engine  # noqa: E402
from models.training.data import load_esc50, read_dcase_tsv  # noqa: E402
from models.training.sed_data import build_negative_bank, clip_arrays  # noqa: E402
from models.training.sed_eval import (clip_accuracy, false_events_per_hour, negative_streams, psds1,  # noqa: E402
                                      record_trace, soundscape_metrics, tune_thresholds)
from models.training.synth import SynthConfig, synthesise  # noqa: E402
from realtime import Detector  # noqa: E402
from realtime.detector import DetectorConfig  # noqa: E402

log = logging.getLogger("eval_detector")


def _half(src: str) -> int:
    return int(hashlib.sha1(src.encode()).hexdigest(), 16) % 2


def _noise_backgrounds(noise_dir: Path, cache: Path) -> list[Path]:
    """The held-out last 30 % of each background recording, written once as WAV for the synthesiser."""
    import soundfile as sf

    from realtime.sources import read_audio

    out = []
    cache.mkdir(parents=True, exist_ok=True)
    for p in sorted(noise_dir.glob("*.flac")):
        dst = cache / f"{p.stem}_eval.wav"
        if not dst.is_file():
            x, sr = read_audio(p)
            sf.write(str(dst), x[int(len(x) * 0.7):], sr, subtype="FLOAT")
        out.append(dst)
    return out


def _scapes(items, labels, name: str, count: int, seed: int, backgrounds: list[Path], cache: Path) -> Path:
    from models.training.data import ClipDataset

    # v4: one event per audible active run (not buried more than 6 dB under the background), runs < 1 s apart joined
    d = cache / f"scapes-v4-{name}-{count}-{seed}"
    if not (d / "labels.tsv").is_file():
        synthesise(ClipDataset(items, labels), backgrounds, d, count, seed=seed,
                   cfg=SynthConfig(duration_s=10.0, events=(1, 3), snr_db=(6.0, 24.0), background_dbfs=-35.0))
    return d


def _traces(det: Detector, scape_dir: Path):
    from realtime.sources import read_audio

    files = sorted((scape_dir / "audio").iterdir())
    return [record_trace(det, read_audio(p)[0], p.name) for p in files], read_dcase_tsv(scape_dir / "labels.tsv")


def _refine(text: str, ap: argparse.ArgumentParser) -> tuple[str, float]:
    """``none`` or ``energy:SECONDS`` as ``(onset_refine, onset_lookback_s)``; anything else ends the run (exit 2)."""
    from realtime.onsets import ONSET_REFINES

    kind, _, lookback = text.partition(":")
    try:
        seconds = float(lookback) if lookback else 1.0
    except ValueError:
        seconds = float("nan")
    if kind not in ONSET_REFINES or not seconds >= 0:
        ap.error(f"--onset-refines: {text!r} is not 'none' or 'energy:SECONDS'")
    return kind, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory with model.onnx")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/esc50"))
    ap.add_argument("--noise", default=str(ROOT.parent / "shared/data/noise"))
    ap.add_argument("--cache", default=str(ROOT / "runs/cache"))
    ap.add_argument("--tune-scapes", type=int, default=20)
    ap.add_argument("--test-scapes", type=int, default=40)
    ap.add_argument("--sources", nargs="+", default=["frames", "max", "clip"])
    ap.add_argument("--no-psds", action="store_true")
    ap.add_argument("--max-false-per-hour", type=float, default=60.0,
                    help="tuning constraint: false events per hour on the training-split negatives")
    ap.add_argument("--no-early-windows", action="store_true", help="wait for a full window at a stream's start")
    ap.add_argument("--ola-delay", type=float, default=0.2,
                    help="with --sources ola: seconds behind the newest audio the overlap-add is tracked")
    ap.add_argument("--onset-refines", nargs="+", default=["none", "energy:0.5", "energy:1.0", "energy:1.5"],
                    help="onset stamping rules tuned over: none, or energy:LOOKBACK_S (realtime.onsets)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    refines = [_refine(r, ap) for r in a.onset_refines]
    t0 = time.time()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(a.cache)
    eng = create_engine("onnxruntime", a.model, intra_op_num_threads=1)
    base_cfg = DetectorConfig.from_model(eng.config)
    fe = base_cfg.frontend
    fold4 = load_esc50(a.data, folds=[4], licenses=None)
    waves = clip_arrays([it.path for it in fold4.items], fe)
    res: dict = {"model": str(a.model), "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
                 "machine": f"{platform.processor() or platform.machine()}, ONNX Runtime 1 thread",
                 "training": dict(eng.config.training).get("train_folds")}
    det = Detector(eng, base_cfg)
    acc = clip_accuracy(det, waves, [it.label for it in fold4.items])
    res["clip_accuracy_fold4"] = acc["accuracy"]
    res["clips"] = acc["clips"]
    np.save(out / "fold4_clip_scores.npy", acc["scores"])
    log.info("clip accuracy %.4f on %d clips", acc["accuracy"], acc["clips"])

    bgs = _noise_backgrounds(Path(a.noise), cache / "noise_eval")
    tune_items = [it for it in fold4.items if _half(it.group or it.path.name) == 0]
    test_items = [it for it in fold4.items if _half(it.group or it.path.name) == 1]
    tune_dir = _scapes(tune_items, fold4.labels, "tune", a.tune_scapes, 11, bgs, cache)
    test_dir = _scapes(test_items, fold4.labels, "test", a.test_scapes, 12, bgs, cache)
    neg_eval = negative_streams(fe, a.noise, cache)
    train_bank = build_negative_bank(fe, a.noise, "train", cache, keep_audio=True)
    neg_train = {k: np.concatenate(v) for k, v in train_bank.audio.items()}
    res["negatives_seconds"] = {k: len(v) / 16000 for k, v in neg_eval.items()}
    res["scapes"] = {"tune": a.tune_scapes, "test": a.test_scapes, "tune_clips": len(tune_items),
                     "test_clips": len(test_items)}
    for source in a.sources:
        cfg = base_cfg.override(onset_source=source, thresholds={}, early_windows=not a.no_early_windows,
                                ola_delay_s=a.ola_delay if source == "ola" else None)
        try:
            d = Detector(eng, cfg)
        except ValueError as e:
            res[source] = {"error": str(e)}
            continue
        tune_tr, tune_ref = _traces(d, tune_dir)
        test_tr, test_ref = _traces(d, test_dir)
        neg_tr = {k: record_trace(d, x, k) for k, x in neg_eval.items()}
        negt_tr = {k: record_trace(d, x, k) for k, x in neg_train.items()}
        tuned = tune_thresholds(d, tune_tr, tune_ref, negt_tr, max_false_per_hour=a.max_false_per_hour,
                                onset_refines=refines)
        if source == "ola":
            tuned["ola_delay_s"] = a.ola_delay
        post = {"merge_gap_s": tuned["merge_gap_s"], "backdate_onsets": tuned["backdate_onsets"],
                "onset_refine": tuned["onset_refine"], "onset_lookback_s": tuned["onset_lookback_s"]}
        dt = d.with_config(threshold=tuned["default"], thresholds=tuned["per_class"], **post)
        r = {"thresholds": tuned, "test": soundscape_metrics(dt, test_tr, test_ref),
             "test_default_only": soundscape_metrics(d.with_config(threshold=tuned["default"], thresholds={}, **post),
                                                     test_tr, test_ref),
             "negatives": false_events_per_hour(dt, neg_tr)}
        if not a.no_psds:
            try:
                r["test"].update(psds1(d.with_config(**post), test_tr, test_ref))
            except Exception as e:  # psds_eval raises its own PSDSEvalError on tables it refuses
                r["test"].update({"psds1": None, "psds_note": f"psds_eval failed: {type(e).__name__}: {e}"})
        res[source] = r
        (out / f"thresholds_{source}.json").write_text(json.dumps({k: v for k, v in tuned.items() if k != "grid"},
                                                                  indent=1))
        log.info("%s: %s", source, {k: v for k, v in r["test"].items() if isinstance(v, float)})
        log.info("%s negatives: %.1f events/h", source, r["negatives"]["per_hour"])
    res["seconds"] = time.time() - t0
    (out / "eval.json").write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: v for k, v in res.items() if k not in ("frames", "clip")}, default=float))
    for s in a.sources:
        if "test" in res.get(s, {}):  # noqa: SIM102
            t = res[s]["test"]
            print(s, {k: round(t[k], 3) for k in ("segment_f1", "event_f1_onset", "latency_median_s",
                                                   "found_fraction") if k in t},
                  "psds1", t.get("psds1"), "false/h", round(res[s]["negatives"]["per_hour"], 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
