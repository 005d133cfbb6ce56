"""The live path: a source thread feeding a Detector on a worker thread, events out on a queue.

Capture (PortAudio's thread) only copies into the ring; this worker downmixes, resamples,
computes features, runs the engine and tracks events. ``aed listen``, ``aed monitor`` and
``aed profile`` all run through it.

Example:
    >>> import numpy as np
    >>> from realtime.detector import Detector, DetectorConfig
    >>> from realtime.config import FrontEndConfig
    >>> class Zero:
    ...     labels = ["x"]
    ...     def infer(self, x): return np.zeros((x.shape[0], 1), np.float32)
    >>> det = Detector(Zero(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64)))
    >>> run = LiveRunner(det, ArraySource(np.zeros(32000, np.float32), 16000))
    >>> run.run_blocking(); run.summary()["windows"]
    10
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

import numpy as np

from realtime.capture import DeviceError, MicrophoneCapture
from realtime.events import Event
from realtime.sources import ArraySource

__all__ = ["LiveRunner", "ArraySource"]

log = logging.getLogger(__name__)


class LiveRunner:
    """Run a :class:`~realtime.detector.Detector` on a live source in a worker thread.

    Args:
        detector: the detector; its ``config.input_rate`` is set from the source's rate.
        source: a started-or-not :class:`MicrophoneCapture`, or an :class:`ArraySource`/``FileSource``.
        on_event: called on the worker thread for each event (keep it short).
        duration_s: stop after this much audio (None: until the source ends or :meth:`stop`).
    """

    def __init__(self, detector, source: MicrophoneCapture | ArraySource,
                 on_event: Callable[[Event], None] | None = None, duration_s: float | None = None):
        self.detector = detector
        self.source = source
        self.on_event = on_event
        self.duration_s = duration_s
        self.events: "queue.Queue[Event]" = queue.Queue()
        self.all_events: list[Event] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.block_waits: list[float] = []      # seconds the worker waited for each block (ring wait)

    @property
    def source_rate(self) -> int:
        return self.source.samplerate if isinstance(self.source, MicrophoneCapture) else self.source.rate

    def _prepare(self) -> None:
        if isinstance(self.source, MicrophoneCapture) and self.source.ring is None:
            self.source.start()
        if self.detector.input_rate != self.source_rate:
            self.detector = self.detector.with_config(input_rate=self.source_rate)

    def _emit(self, events: list[Event]) -> None:
        for e in events:
            self.all_events.append(e)
            self.events.put(e)
            if self.on_event is not None:
                self.on_event(e)

    def _blocks(self):
        if isinstance(self.source, MicrophoneCapture):
            while not self._stop.is_set():
                yield self.source.read(timeout=0.25)
        else:
            yield from self.source.blocks()

    def _work(self) -> None:
        det = self.detector
        limit = None if self.duration_s is None else int(self.duration_s * self.source_rate)
        fed = 0
        ring = getattr(self.source, "ring", None)
        try:
            t_wait = time.perf_counter()
            for block in self._blocks():
                self.block_waits.append(time.perf_counter() - t_wait)
                if self._stop.is_set():
                    break
                if ring is not None:
                    for g in ring.take_gaps():
                        log.warning("dropped %d samples (consumer too slow)", g.length)
                        self._emit(det.gap(g.length / self.source_rate))
                if limit is not None:
                    block = block[: max(0, limit - fed)]
                if block.shape[0]:
                    fed += block.shape[0]
                    self._emit(det.push(block))
                if limit is not None and fed >= limit:
                    break
                t_wait = time.perf_counter()
        except DeviceError as e:
            self.error = e
            log.error("%s", e)
        except Exception as e:  # reported to the consumer, never swallowed
            self.error = e
            log.exception("detector worker failed")
        finally:
            try:
                self._emit(det.flush())
            except Exception as e:  # noqa: BLE001 - keep the first error, still finish cleanly
                self.error = self.error or e
            if isinstance(self.source, MicrophoneCapture):
                self.source.stop()
            self.finished_at = time.perf_counter()

    def start(self) -> "LiveRunner":
        self._prepare()
        self.started_at = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name="aed-detector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if isinstance(self.source, ArraySource):
            self.source.stop()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_blocking(self) -> None:
        self.start()
        try:
            while not self.join(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
            self.join()

    def summary(self) -> dict[str, Any]:
        """Counts, overruns and per-stage timings, as ``aed listen`` prints them."""
        det = self.detector
        audio_s = det.samples_in / det.input_rate
        wall = (self.finished_at or time.perf_counter()) - (self.started_at or time.perf_counter())
        stages = det.timer.summary()
        compute = sum(v["total_ms"] for v in stages.values()) / 1e3
        cap = self.source if isinstance(self.source, MicrophoneCapture) else None
        return {
            "audio_s": round(audio_s, 3),
            "wall_s": round(wall, 3),
            "windows": det.windows_scored,
            "events": sum(1 for e in self.all_events if e.kind == "onset"),
            "overruns": cap.overruns if cap else 0,
            "dropped_samples": cap.ring.dropped_samples if cap and cap.ring else 0,
            "input_overflows": cap.input_overflows if cap else 0,
            "rtf": round(compute / audio_s, 5) if audio_s > 0 else None,
            "stages": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in stages.items()},
            "error": None if self.error is None else str(self.error),
        }
