"""Feeding EfficientAT's 32 kHz ``mn04_as`` at 16 kHz: how close the features and tags are, and what it saves.

The pretrained network saw EfficientAT's 32 kHz front end. aed's ``efficientat`` front end runs at 16 kHz with the
same 25 ms window, 10 ms hop and 31.25 Hz FFT bin spacing, the 32 kHz pre-emphasis response and a power gain of 4
folded into the mel matrix (``realtime.frontend.mel_banks``). This script measures that choice on real audio:

(a) the original path: soxr 16 -> 32 kHz ('HQ'), time-domain pre-emphasis ``[-0.97, 1]``, ``torch.stft`` (n_fft
    1024, hop 320, symmetric Hann 800, centred, reflect), Kaldi mel bands at 32 kHz from 0 to 15 kHz (one zero
    column for Nyquist), ``log(x + 1e-5)``, ``(x + 4.5) / 5``;
(b) aed's NumPy front end at 16 kHz (``efficientat_frontend()``), and for reference two other ways: the same NumPy
    front end configured at 32 kHz on the soxr-upsampled audio, and pre-emphasis in the time domain at 16 kHz
    (torch, with the gain of 4 but no folded response);
(c) the cost per 10 ms hop of the streaming NumPy front end at 16 kHz against the 32 kHz configuration, pushed in
    100 ms chunks, plus soxr's streaming 16 -> 32 kHz resampling that the 32 kHz path needs.

Accuracy: median |difference| of the normalised log-mel over the lower 100 of 128 bands (all below 7.4 kHz) on
the frames both paths have, and the AudioSet tags of ``mn04_as`` (whole 5 s clip as one window): top-1 agreement
and the mean top-5 overlap with the original path. Clips: every 40th row of ``esc50.csv`` among folds 1-4
(folds in order, CSV order within a fold): 40 clips, 200 s. Timing: one thread, the 40 clips concatenated,
``--reps`` alternating repetitions after a warm-up; medians in µs per hop.

Needs ``../shared/models/efficientat/mn04_as_mAP_432.pt`` and ``../shared/data/esc50``.

Usage: python benchmarks/bench_efficientat_frontend.py [--reps 7] [--out benchmarks/results/efficientat_frontend]
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from realtime.config import FrontEndConfig, efficientat_frontend  # noqa: E402
from realtime.frontend import StreamingFbank, fbank, normalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHECKPOINT = SHARED / "models" / "efficientat" / "mn04_as_mAP_432.pt"
ESC50 = SHARED / "data" / "esc50"
LOW_BANDS = 100
CHUNK_S = 0.1
CFG16 = efficientat_frontend()
CFG32 = FrontEndConfig(kind="efficientat", sample_rate=32000, frame_length_ms=25, frame_shift_ms=10, num_mel_bins=128,
                       low_freq=0, high_freq=15000, mean=-4.5, std=2.5, reference_rate=32000, preemphasis=0.97)


def pick_clips(step: int = 40) -> list[Path]:
    """Every ``step``-th row of esc50.csv among folds 1-4, folds in order, CSV order within a fold."""
    with open(ESC50 / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for fold in (1, 2, 3, 4) for r in rows if int(r["fold"]) == fold]
    return [ESC50 / "audio" / r["filename"] for r in rows[::step]]


def read16(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32")
    if rate != 16000 or audio.ndim != 1:
        raise SystemExit(f"{path}: expected mono 16 kHz audio, got shape {audio.shape} at {rate} Hz")
    return audio


class TorchFrontEnds:
    """The original 32 kHz EfficientAT front end and the time-domain-pre-emphasis 16 kHz variant, in torch."""

    def __init__(self) -> None:
        import torch
        import torchaudio

        self.torch = torch
        mel, _ = torchaudio.compliance.kaldi.get_mel_banks(128, 1024, 32000, 0.0, 15000.0, vtln_low=100.0,
                                                           vtln_high=-500.0, vtln_warp_factor=1.0)
        self.mel = torch.nn.functional.pad(mel, (0, 1))                     # (128, 512) -> (128, 513)
        self.preemph = torch.tensor([[[-0.97, 1.0]]])                       # (out, in, k)

    def _logmel(self, x, n_fft: int, hop: int, win: int, mel, gain: float):
        torch = self.torch
        y = torch.nn.functional.conv1d(x[None, None], self.preemph)[0, 0]   # y[n] = x[n+1] - 0.97 x[n]
        spec = torch.stft(y, n_fft=n_fft, hop_length=hop, win_length=win,
                          window=torch.hann_window(win, periodic=False), center=True, pad_mode="reflect",
                          normalized=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                             # (n_fft/2 + 1, N)
        melspec = gain * (mel @ power)                                      # (128, N)
        return ((torch.log(melspec + 1e-5) + 4.5) / 5.0).T.numpy()          # (N, 128)

    def original32(self, audio32: np.ndarray) -> np.ndarray:
        return self._logmel(self.torch.from_numpy(audio32), 1024, 320, 800, self.mel, 1.0)

    def time_preemph16(self, audio16: np.ndarray) -> np.ndarray:
        return self._logmel(self.torch.from_numpy(audio16), 512, 160, 400, self.mel[:, :257], 4.0)


def accuracy(clips: list[Path]) -> tuple[dict, list[dict]]:
    import soxr
    import torch

    from models import load_efficientat_checkpoint

    model = load_efficientat_checkpoint(CHECKPOINT)
    labels = model.labels
    fe = TorchFrontEnds()
    variants = {
        "aed NumPy, 16 kHz (efficientat_frontend())": lambda a16, a32: normalize(fbank(a16, CFG16), CFG16),
        "aed NumPy, 32 kHz configuration on soxr-upsampled audio": lambda a16, a32: normalize(fbank(a32, CFG32),
                                                                                             CFG32),
        "torch, 16 kHz, time-domain pre-emphasis and gain 4": lambda a16, a32: fe.time_preemph16(a16),
    }
    per_clip, diffs = [], {k: [] for k in variants}
    agree = {k: [] for k in variants}
    overlap = {k: [] for k in variants}

    def tags(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()   # (T, F) -> (1, T, F)

    for path in clips:
        a16 = read16(path)
        a32 = soxr.resample(a16, 16000, 32000, quality="HQ").astype(np.float32)
        ref = fe.original32(a32)
        ref_scores = tags(ref)
        ref_top = np.argsort(-ref_scores)[:5]
        row = {"clip": path.name, "frames": {"original": int(ref.shape[0])},
               "original_top5": [[labels[i], round(float(ref_scores[i]), 4)] for i in ref_top]}
        for name, fn in variants.items():
            x = fn(a16, a32)
            n = min(x.shape[0], ref.shape[0])
            d = np.abs(x[:n, :LOW_BANDS] - ref[:n, :LOW_BANDS])      # common frames: both start at t = 0
            diffs[name].append(d.ravel())
            scores = tags(x)
            top = np.argsort(-scores)[:5]
            agree[name].append(bool(top[0] == ref_top[0]))
            overlap[name].append(len(set(top) & set(ref_top)) / 5.0)
            row["frames"][name] = int(x.shape[0])
            row[name] = {"median_abs_diff": float(np.median(d)),
                         "top5": [[labels[i], round(float(scores[i]), 4)] for i in top],
                         "original_top1_score_here": round(float(scores[ref_top[0]]), 4),
                         "top1_score_under_original": round(float(ref_scores[top[0]]), 4)}
        per_clip.append(row)
    summary = {name: {"median_abs_diff_low100": float(np.median(np.concatenate(diffs[name]))),
                      "p95_abs_diff_low100": float(np.percentile(np.concatenate(diffs[name]), 95)),
                      "top1_agree": int(sum(agree[name])), "clips": len(clips),
                      "mean_top5_overlap": float(np.mean(overlap[name]))} for name in variants}
    return summary, per_clip


def timing(clips: list[Path], reps: int) -> dict:
    from realtime.resample import StreamingResampler

    audio16 = np.concatenate([read16(p) for p in clips])
    rs = StreamingResampler(16000, 32000)
    audio32 = np.concatenate([rs.push(audio16), rs.flush()])
    hops = fbank(audio16, CFG16).shape[0]

    def stream(cfg: FrontEndConfig, audio: np.ndarray):
        chunk = int(round(CHUNK_S * cfg.sample_rate))

        def run() -> None:
            fe = StreamingFbank(cfg)
            for i in range(0, audio.shape[0], chunk):
                fe.push(audio[i:i + chunk])
        return run

    def resample() -> None:
        r = StreamingResampler(16000, 32000)
        chunk = int(round(CHUNK_S * 16000))
        for i in range(0, audio16.shape[0], chunk):
            r.push(audio16[i:i + chunk])
        r.flush()

    cases = {"front end at 16 kHz": stream(CFG16, audio16), "front end at 32 kHz": stream(CFG32, audio32),
             "soxr 16 -> 32 kHz (HQ, streaming)": resample}
    for fn in cases.values():     # warm-up
        fn()
    res: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():    # alternate within each repetition: drift affects every case alike
            t0 = time.perf_counter()
            fn()
            res[name].append((time.perf_counter() - t0) / hops * 1e6)
    rows = {k: {"median_us_per_hop": float(np.median(v)), "min_us_per_hop": float(np.min(v)), "reps": len(v)}
            for k, v in res.items()}
    m16 = rows["front end at 16 kHz"]["median_us_per_hop"]
    m32 = rows["front end at 32 kHz"]["median_us_per_hop"] + rows["soxr 16 -> 32 kHz (HQ, streaming)"][
        "median_us_per_hop"]
    return {"audio_s": audio16.shape[0] / 16000, "hops": hops, "chunk_s": CHUNK_S, "cases": rows,
            "path_32k_us_per_hop": m32, "path_16k_us_per_hop": m16, "ratio_32k_path_over_16k": m32 / m16,
            "ratio_frontend_only": rows["front end at 32 kHz"]["median_us_per_hop"] / m16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="timing repetitions (default 7)")
    ap.add_argument("--out", default="benchmarks/results/efficientat_frontend", help="output stem (.md, .json)")
    args = ap.parse_args()
    if not CHECKPOINT.is_file() or not (ESC50 / "esc50.csv").is_file():
        raise SystemExit(f"needs {CHECKPOINT} and {ESC50}/esc50.csv")
    import soxr
    import torch
    import torchaudio

    torch.set_num_threads(1)
    clips = pick_clips()
    summary, per_clip = accuracy(clips)
    cost = timing(clips, args.reps)
    command = "python benchmarks/bench_efficientat_frontend.py" + "".join(f" {a}" for a in sys.argv[1:])
    meta = {"command": command, "date": datetime.date.today().isoformat(),
            "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": 1,
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "torchaudio": torchaudio.__version__, "soxr": soxr.__version__,
            "clips": "every 40th row of esc50.csv among folds 1-4 (folds in order, CSV order within a fold)",
            "clip_names": [p.name for p in clips]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "accuracy": summary, "timing": cost,
                                                    "per_clip": per_clip}, indent=2))
    lines = ["# EfficientAT front end: 32 kHz model fed at 16 kHz", "",
             f"{len(clips)} ESC-50 clips ({meta['clips']}), {len(clips) * 5} s. Reference: the original 32 kHz "
             "path (soxr 16 -> 32 kHz 'HQ', time-domain pre-emphasis, torch.stft 1024/320/800, Kaldi mel 0-15 kHz, "
             "log(x + 1e-5), (x + 4.5) / 5). Tags: `mn04_as` (mAP 43.2), whole 5 s clip as one window.", "",
             "## Features and tags against the 32 kHz original", "",
             f"| front end | median abs diff, lower {LOW_BANDS} bands | p95 | same top-1 | mean top-5 overlap |",
             "|---|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['median_abs_diff_low100']:.4f} | {s['p95_abs_diff_low100']:.4f} | "
                     f"{s['top1_agree']} / {s['clips']} | {s['mean_top5_overlap']:.3f} |")
    first = next(iter(summary))
    lines += ["", f"Clips whose top-1 differs for `{first}` (each label's score under the original -> under ours):",
              ""]
    for row in per_clip:
        ref_label, ref_score = row["original_top5"][0]
        our_label, our_score = row[first]["top5"][0]
        if our_label != ref_label:
            lines.append(f"- {row['clip']}: original top-1 {ref_label} {ref_score:.3f} -> "
                         f"{row[first]['original_top1_score_here']:.3f}; ours {our_label} "
                         f"{row[first]['top1_score_under_original']:.3f} -> {our_score:.3f}")
    lines += ["", f"## Streaming cost per 10 ms hop ({CHUNK_S * 1000:.0f} ms chunks, one thread)", "",
              f"{cost['audio_s']:.0f} s of audio, {cost['hops']} hops, {args.reps} alternating repetitions after a "
              "warm-up.", "", "| stage | median µs/hop | best µs/hop |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['median_us_per_hop']:.1f} | {v['min_us_per_hop']:.1f} |" for k, v in cost["cases"].items()]
    lines += ["", f"32 kHz path (resample + front end): {cost['path_32k_us_per_hop']:.1f} µs/hop; 16 kHz path: "
              f"{cost['path_16k_us_per_hop']:.1f} µs/hop; ratio {cost['ratio_32k_path_over_16k']:.2f}x "
              f"(front ends alone {cost['ratio_frontend_only']:.2f}x).", "",
              f"Machine: {meta['machine']}, {meta['cpu_count']} cores (one thread used; the machine was shared with "
              f"another job, so absolute times are noisy); numpy {meta['numpy']}, torch {meta['torch']}, soxr "
              f"{meta['soxr']}. Date: {meta['date']}. Command: `{meta['command']}`."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
