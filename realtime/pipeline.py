"""The live path: a source thread feeding a Detector on a worker thread, events out through a callback.

Capture (PortAudio's thread) only copies into the ring; this worker downmixes, resamples,
computes features, runs the engine and tracks events. ``aed listen``, ``aed monitor`` and
``aed profile`` all run through it. Audio that never reached the detector (ring overruns, clock
discontinuities) arrives as gaps in stream order: the detector is told exactly where, so event
times stay on the true timeline. Nothing the runner keeps grows with the length of a run.

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
import math
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from realtime.capture import DeviceError, MicrophoneCapture
from realtime.errors import ConfigError
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
        keep: how many recent events and block waits to keep for inspection (bounded memory).
    """

    def __init__(self, detector, source: MicrophoneCapture | ArraySource,
                 on_event: Callable[[Event], None] | None = None, duration_s: float | None = None,
                 keep: int = 1000):
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ConfigError(f"duration must be a finite number of seconds > 0, or None; got {duration_s}")
        self.detector = detector
        self.source = source
        self.on_event = on_event
        self.duration_s = duration_s
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()      # set when the worker has finished, source closed
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.recent_events: deque[Event] = deque(maxlen=keep)   # the last ``keep`` events
        self.block_waits: deque[float] = deque(maxlen=keep)     # seconds the worker waited for each recent block
        self.onsets = 0                 # onset events so far
        self.events_total = 0           # events of either kind so far
        self.gaps = 0                   # gaps the detector was told about (a stall of drops counts once)
        self.gap_s = 0.0                # their total length in seconds

    @property
    def all_events(self) -> list[Event]:
        """The most recent events (at most ``keep``; every event of a run shorter than that), oldest first."""
        return list(self.recent_events)

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
            self.recent_events.append(e)
            self.events_total += 1
            self.onsets += e.kind == "onset"
            if self.on_event is not None:
                self.on_event(e)

    def _gap(self, det, gap) -> None:
        rate = self.source_rate
        seconds = gap.length / rate
        self.gaps += 1
        self.gap_s += seconds
        why = "the detector fell behind and the ring overflowed" if gap.kind == "overrun" else \
            "the input stream skipped (its clock jumped)"
        log.warning("lost %.3f s of audio at %.3f s of the stream: %s", seconds, gap.start / rate, why)
        self._emit(det.gap(seconds))

    def _work(self) -> None:
        det = self.detector
        limit = None if self.duration_s is None else int(self.duration_s * self.source_rate)
        fed = 0
        live = isinstance(self.source, MicrophoneCapture)
        try:
            t_wait = time.perf_counter()
            while not self._stop.is_set():
                if live:
                    block = self.source.read(timeout=0.25, until_gap=True)   # ends at the next gap
                else:
                    block = next(self._array_blocks, None)
                    if block is None:
                        break
                self.block_waits.append(time.perf_counter() - t_wait)
                if self._stop.is_set():
                    break
                if limit is not None:
                    block = block[: max(0, limit - fed)]
                if block.shape[0]:
                    fed += block.shape[0]
                    self._emit(det.push(block))
                if limit is not None and fed >= limit:
                    break
                if live:
                    for g in self.source.take_gaps():          # in stream order: after the audio before them
                        self._gap(det, g)
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
            try:
                if live:
                    self.source.stop()                          # bounded: never waits on a frozen server
            finally:
                self.finished_at = time.perf_counter()
                self._done.set()

    def start(self) -> "LiveRunner":
        self._prepare()
        if not isinstance(self.source, MicrophoneCapture):
            self._array_blocks = iter(self.source.blocks())
        self.started_at = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name="aed-detector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if isinstance(self.source, ArraySource):
            self.source.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish (its source closed); True when it has."""
        if self._thread is None:
            return True
        # an Event, not Thread.join: a join interrupted by Ctrl-C can report a live thread as finished (3.11)
        if not self._done.wait(timeout):
            return False
        self._thread.join(1.0)
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
            self.join(10.0)         # the worker stops within a read timeout plus a bounded stream close

    def summary(self) -> dict[str, Any]:
        """Counts, overruns, lost audio and per-stage timings, as ``aed listen`` prints them.

        ``lost_s`` is all audio that never reached the detector: ring drops (``dropped_samples``) plus
        spans the device never delivered; ``gaps`` counts the lost spans the detector was told about
        (one per stall), ``stalls`` the pauses of the callback stream, ours or the sound server's.
        """
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
            "events": self.onsets,
            "overruns": cap.overruns if cap else 0,
            "dropped_samples": cap.ring.dropped_samples if cap and cap.ring else 0,
            "input_overflows": cap.input_overflows if cap else 0,
            "lost_s": round(cap.lost_s, 3) if cap else 0.0,
            "gaps": self.gaps,
            "stalls": cap.stalls if cap else 0,
            "rtf": round(compute / audio_s, 5) if audio_s > 0 else None,
            "stages": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in stages.items()},
            "error": None if self.error is None else str(self.error),
        }
