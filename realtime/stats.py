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
    """Collects durations per named stage in fixed memory: the newest ``maxlen`` of each, in a ring.

    Each stage's ring (``maxlen`` float64 values) is allocated and written in full when the stage is first timed, so
    the timer's memory is set from the start and does not grow over a run of any length. ``samples[stage]`` is an
    array of the held durations, oldest first; a position in it means nothing once the ring has wrapped. To read
    what a piece of work added, take :meth:`mark` before it and :meth:`since` after it: a mark counts every
    duration ever added, so it stays valid across wrapping (and across :meth:`reset`).

    Example:
        >>> timer = StageTimer(maxlen=2)
        >>> for s in (0.1, 0.2, 0.3):
        ...     timer.add("features", s)
        >>> timer.samples["features"].tolist()
        [0.2, 0.3]
        >>> mark = timer.mark()
        >>> timer.add("features", 0.4)
        >>> timer.since(mark)
        {'features': [0.4]}
    """

    def __init__(self, maxlen: int = 100_000):
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = int(maxlen)
        self._ring: dict[str, np.ndarray] = {}
        self._added: dict[str, int] = {}    # durations ever added per stage; never reset
        self._start: dict[str, int] = {}    # _added at the last reset: what came before is no longer held

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        """Record one duration of ``stage`` in seconds."""
        ring = self._ring.get(stage)
        if ring is None:
            ring = self._ring[stage] = np.full(self.maxlen, np.nan)      # written now: resident from the start
            self._start.setdefault(stage, 0)
        n = self._added.get(stage, 0)
        ring[n % self.maxlen] = seconds
        self._added[stage] = n + 1

    def _held(self, stage: str, newest: int | None = None) -> np.ndarray:
        end = self._added.get(stage, 0)
        k = min(end - self._start.get(stage, 0), self.maxlen)
        if newest is not None:
            k = min(k, max(0, int(newest)))
        if k <= 0:
            return np.zeros(0)
        return self._ring[stage][np.arange(end - k, end) % self.maxlen]

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """The held durations of each stage that has any, oldest first (copies)."""
        out = {stage: self._held(stage) for stage in self._ring}
        return {k: v for k, v in out.items() if v.size}

    def recent(self, stage: str, n: int) -> np.ndarray:
        """The newest ``n`` held durations of ``stage``, oldest first."""
        return self._held(stage, n) if stage in self._ring else np.zeros(0)

    def mark(self) -> dict[str, int]:
        """A bookmark for :meth:`since`: how many durations each stage has had added so far."""
        return dict(self._added)

    def since(self, mark: Mapping[str, int]) -> dict[str, list[float]]:
        """The durations added after ``mark`` (from :meth:`mark`), per stage, oldest first.

        Stages with nothing new map to an empty list. At most the newest ``maxlen`` of a stage are still held.
        """
        held = [st for st in self._ring if self._added[st] > self._start.get(st, 0)]     # reset stages have none
        return {st: self._held(st, self._added[st] - mark.get(st, 0)).tolist() for st in held}

    def summary(self) -> dict[str, dict[str, float]]:
        """:func:`summarize` of each stage's held durations."""
        return {k: summarize(v) for k, v in self.samples.items()}

    def reset(self) -> None:
        """Drop the held durations (marks taken before stay valid; the rings' memory is kept for reuse)."""
        self._start = dict(self._added)
