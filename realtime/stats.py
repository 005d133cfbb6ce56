"""Per-stage wall-clock timing, cheap enough for the per-hop path."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Mapping

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
    """Collects durations per named stage (bounded: keeps the last ``maxlen`` of each).

    ``samples[stage]`` holds only the newest ``maxlen`` durations, so a position in it means nothing once the list
    has been trimmed. To read what a piece of work added, take :meth:`mark` before it and :meth:`since` after it:
    a mark counts every duration ever added, so it stays valid across trimming (and across :meth:`reset`).

    Example:
        >>> timer = StageTimer(maxlen=2)
        >>> for s in (0.1, 0.2, 0.3):
        ...     timer.add("features", s)
        >>> mark = timer.mark()
        >>> timer.add("features", 0.4)
        >>> timer.since(mark)
        {'features': [0.4]}
    """

    def __init__(self, maxlen: int = 100_000):
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self.samples: dict[str, list[float]] = {}
        self._added: dict[str, int] = {}  # durations ever added per stage; never trimmed, never reset

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        """Record one duration of ``stage`` in seconds."""
        lst = self.samples.setdefault(stage, [])
        lst.append(seconds)
        self._added[stage] = self._added.get(stage, 0) + 1
        if len(lst) > self.maxlen:
            del lst[: len(lst) - self.maxlen]

    def mark(self) -> dict[str, int]:
        """A bookmark for :meth:`since`: how many durations each stage has had added so far."""
        return dict(self._added)

    def since(self, mark: Mapping[str, int]) -> dict[str, list[float]]:
        """The durations added after ``mark`` (from :meth:`mark`), per stage, oldest first.

        Stages with nothing new map to an empty list. At most the newest ``maxlen`` of a stage are still held.
        """
        out = {}
        for stage, lst in self.samples.items():
            new = min(self._added[stage] - mark.get(stage, 0), len(lst))
            out[stage] = lst[len(lst) - new:] if new > 0 else []
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        """:func:`summarize` of each stage's held durations."""
        return {k: summarize(v) for k, v in self.samples.items()}

    def reset(self) -> None:
        """Drop the held durations (marks taken before stay valid)."""
        self.samples.clear()
