"""StreamingFbank cost per 10 ms hop against torchaudio's Kaldi fbank, side by side in one run.

Both compute the same frames of the same real recordings on one thread; repetitions alternate
between the two so that drift on a noisy machine affects each alike. Streaming is measured at
the chunk sizes a live stream sees (one hop, 20 ms callback blocks, 100 ms blocks).

Usage: python benchmarks/bench_frontend.py [--reps 5] [--out benchmarks/results/frontend]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from realtime.config import FrontEndConfig  # noqa: E402
from realtime.frontend import StreamingFbank, fbank  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50" / "audio"


def load(n: int) -> np.ndarray:
    files = sorted(DATA.glob("*.flac"))[::97][:n]
    if not files:
        raise SystemExit(f"no ESC-50 clips under {DATA}")
    return np.concatenate([sf.read(f, dtype="float32")[0] for f in files])


def per_hop_us(fn, audio: np.ndarray, frames: int) -> float:
    t0 = time.perf_counter()
    fn(audio)
    return (time.perf_counter() - t0) / frames * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/frontend")
    args = ap.parse_args()
    import torch
    import torchaudio

    torch.set_num_threads(1)
    audio = load(args.clips)
    res: dict[str, list[float]] = {}
    for bins in (64, 128):
        cfg = FrontEndConfig(num_mel_bins=bins)
        frames = fbank(audio, cfg).shape[0]
        wave = torch.from_numpy(audio)[None]

        def ta(_a, bins=bins):
            return torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, use_energy=False,
                                                     window_type="hanning", num_mel_bins=bins, dither=0.0,
                                                     frame_shift=10, sample_frequency=16000)

        def stream(chunk, cfg=cfg):
            def run(a):
                fe = StreamingFbank(cfg)
                for i in range(0, a.shape[0], chunk):
                    fe.push(a[i:i + chunk])
            return run

        cases = {f"torchaudio offline ({bins} mel)": ta,
                 f"aed offline ({bins} mel)": lambda a, cfg=cfg: fbank(a, cfg),
                 f"aed streaming, 160-sample chunks ({bins} mel)": stream(160),
                 f"aed streaming, 320-sample chunks ({bins} mel)": stream(320),
                 f"aed streaming, 1600-sample chunks ({bins} mel)": stream(1600)}
        for fn in cases.values():  # warm-up
            fn(audio[:16000])
        for _ in range(args.reps):
            for name, fn in cases.items():       # alternate cases within each repetition
                res.setdefault(name, []).append(per_hop_us(fn, audio, frames))
    rows = {k: {"median_us_per_hop": float(np.median(v)), "min_us_per_hop": float(np.min(v)), "reps": len(v)}
            for k, v in res.items()}
    meta = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "torchaudio": torchaudio.__version__, "audio_s": audio.shape[0] / 16000, "threads": 1,
            "command": "python benchmarks/bench_frontend.py"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    lines = ["# Front end: cost per 10 ms hop (one thread)", "",
             f"{meta['audio_s']:.0f} s of ESC-50 audio, {args.reps} alternating repetitions; median and best. "
             "Target: at most 50 µs per hop.", "",
             "| case | median µs/hop | best µs/hop |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['median_us_per_hop']:.1f} | {v['min_us_per_hop']:.1f} |" for k, v in rows.items()]
    lines += ["", f"Machine: {meta['machine']}, {meta['cpu_count']} cores; numpy {meta['numpy']}, torch "
              f"{meta['torch']}. Command: `{meta['command']}`."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
