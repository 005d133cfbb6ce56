"""realtime.stats: the stage timer's bounded buffers and reading what one piece of work added."""
from __future__ import annotations

import pytest

from realtime.stats import StageTimer, summarize


def _profiler_chunk(timer: StageTimer, seconds: float) -> float:
    """What the profiler does per chunk: time one stage, then sum what that chunk added."""
    mark = timer.mark()
    timer.add("features", seconds)
    return sum(timer.since(mark).get("features", []))


def test_stage_times_survive_the_trim_at_the_default_bound() -> None:
    timer = StageTimer()
    for _ in range(100_000):
        timer.add("features", 1e-6)
    assert len(timer.samples["features"]) == 100_000
    # the bug: once trimmed, a length taken before a chunk equals the length after it, so the chunk read as 0
    for _ in range(3):
        assert _profiler_chunk(timer, 0.25) == pytest.approx(0.25)
    assert len(timer.samples["features"]) == 100_000 and timer.samples["features"][-1] == 0.25


def test_since_with_small_bound_and_several_stages() -> None:
    timer = StageTimer(maxlen=3)
    timer.add("resample", 1.0)
    mark = timer.mark()
    for s in (0.1, 0.2, 0.3, 0.4):
        timer.add("features", s)
    timer.add("resample", 2.0)
    new = timer.since(mark)
    assert new["resample"] == [2.0]
    assert new["features"] == [0.2, 0.3, 0.4]  # four were added, the newest three are held
    assert timer.since(timer.mark()) == {"resample": [], "features": []}
    assert timer.since({}) == {"resample": [1.0, 2.0], "features": [0.2, 0.3, 0.4]}


def test_reset_keeps_marks_valid() -> None:
    timer = StageTimer(maxlen=10)
    timer.add("post", 0.5)
    mark = timer.mark()
    timer.reset()
    assert timer.samples == {} and timer.since(mark) == {}
    timer.add("post", 0.7)
    assert timer.since(mark) == {"post": [0.7]}
    assert timer.summary()["post"]["count"] == 1


def test_context_manager_and_summary() -> None:
    timer = StageTimer()
    with timer("inference"):
        pass
    assert len(timer.samples["inference"]) == 1 and timer.samples["inference"][0] >= 0.0
    assert summarize([])["count"] == 0
    assert summarize([0.001, 0.003])["p50_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="maxlen"):
        StageTimer(maxlen=0)


def test_memory_is_fixed_from_the_first_sample() -> None:
    timer = StageTimer(maxlen=1000)
    timer.add("inference", 0.001)
    ring = timer._ring["inference"]
    assert ring.shape == (1000,) and ring.nbytes == 8000          # the whole ring exists after one sample
    for i in range(5000):                                          # five times round: no growth, newest kept
        timer.add("inference", float(i))
    assert timer._ring["inference"] is ring
    held = timer.samples["inference"]
    assert held.shape == (1000,) and held[0] == 4000.0 and held[-1] == 4999.0
    assert timer.recent("inference", 3).tolist() == [4997.0, 4998.0, 4999.0]
