"""Per-stage wall-clock timing, cheap enough for the per-hop path."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np

__all__ = ["StageTimer", "summarize"]


def summarize(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of a list of durations in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {"count": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"),
                "max_ms": float("nan"), "mean_ms": float("nan"), "total_ms": 0.0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": int(a.size), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "max_ms": float(a.max()), "mean_ms": float(a.mean()), "total_ms": float(a.sum())}


class StageTimer:
    """Collects durations per named stage (bounded: keeps the last ``maxlen`` of each)."""

    def __init__(self, maxlen: int = 100_000):
        self.maxlen = maxlen
        self.samples: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        lst = self.samples.setdefault(stage, [])
        lst.append(seconds)
        if len(lst) > self.maxlen:
            del lst[: len(lst) - self.maxlen]

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: summarize(v) for k, v in self.samples.items()}

    def reset(self) -> None:
        self.samples.clear()
