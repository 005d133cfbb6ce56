"""Shared test helpers: a deterministic loudness 'engine' and signal makers (no model needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ESC50 = DATA / "esc50"


class LoudnessEngine:
    """An engine without a model: class 'burst' scores high when any frame in the window is loud.

    Its score rises as soon as a burst's first frame enters the window, which makes onset timing
    exact enough to test the detector's clock (window 1 s, hop 0.1 s).
    """

    labels = ["burst"]

    def __init__(self, level: float = 0.5, num_mel_bins: int = 64, record: bool = True):
        self.level = level          # normalised log-mel level that counts as loud
        self.record = record        # keep every batch size in ``batches`` (off for long soak runs)
        self.config = {"frontend": {"num_mel_bins": num_mel_bins}, "labels": self.labels}
        self.calls = 0
        self.batches: list[int] = []

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.record:
            self.batches.append(x.shape[0])
        loud = x.max(axis=(1, 2))                              # loudest mel bin of the loudest frame: (B,)
        return (1.0 / (1.0 + np.exp(-10.0 * (loud - self.level)))).astype(np.float32)[:, None]


def tone_burst(rate: int, total_s: float, onset_s: float, dur_s: float, freq: float = 1000.0,
               amp: float = 0.5, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (noise * rng.standard_normal(int(total_s * rate))).astype(np.float32)
    i0, n = int(onset_s * rate), int(dur_s * rate)
    t = np.arange(n) / rate
    n = min(n, x.shape[0] - i0)
    x[i0:i0 + n] += (amp * np.sin(2 * np.pi * freq * t[:n])).astype(np.float32)
    return x


def esc50_clips(n: int = 3) -> list[Path]:
    files = sorted((ESC50 / "audio").glob("*.flac"))
    if not files:
        import pytest

        pytest.skip(f"shared data not found at {ESC50} (read from ../shared/data)")
    step = max(1, len(files) // n)
    return files[::step][:n]
