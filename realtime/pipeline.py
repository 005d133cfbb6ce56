"""The live path: a source thread feeding a Detector on a worker thread, events out through a callback.

Capture (PortAudio's thread) only copies into the ring; this worker downmixes, resamples,
computes features, runs the engine and tracks events. ``aed listen``, ``aed monitor`` and
``aed profile`` all run through it. Audio that never reached the detector (ring overruns, clock
discontinuities) arrives as gaps in stream order: the detector is told exactly where, so event
times stay on the true timeline. Nothing the runner keeps grows with the length of a run.

The engine is the heavy part, loaded once; a :class:`~realtime.detector.Detector` is the state of one stream,
built for the stream's rate. The runner uses the caller's detector as it is and never rebuilds it: a detector
whose ``input_rate`` is not the source's is refused with a :class:`~realtime.errors.ConfigError` that says how
to build the right one. Start a microphone first when its rate is not known in advance.

Example:
    >>> import numpy as np
    >>> from realtime.detector import Detector, DetectorConfig
    >>> from realtime.config import FrontEndConfig
    >>> class Zero:
    ...     labels = ["x"]
    ...     def infer(self, x): return np.zeros((x.shape[0], 1), np.float32)
    >>> source = ArraySource(np.zeros(32000, np.float32), 16000)
    >>> det = Detector(Zero(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), input_rate=source.rate))
    >>> run = LiveRunner(det, source)
    >>> run.run_blocking(); run.summary()["windows"], run.detector is det
    (10, True)
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from realtime.audio_source import AudioSource
from realtime.errors import AedError, ConfigError
from realtime.events import Event
from realtime.sources import ArraySource

__all__ = ["LiveRunner", "ArraySource", "AudioSource"]

log = logging.getLogger(__name__)


class LiveRunner:
    """Run a :class:`~realtime.detector.Detector` on a live :class:`~realtime.audio_source.AudioSource` in a worker
    thread.

    Args:
        detector: the detector for this stream; its ``input_rate`` must be the source's ``rate``. Build it for the
            stream: ``Detector(engine, DetectorConfig.from_model(engine.config).override(input_rate=source.rate))``.
        source: a :class:`~realtime.capture.MicrophoneCapture` (started, or started here when its ``rate`` is
            still None), an :class:`ArraySource`/``FileSource``, or any other ``AudioSource``. The runner stops it
            when it ends.
        on_event: called on the worker thread for each event (keep it short).
        duration_s: stop after this much audio (None: until the source ends or :meth:`stop`).
        keep: how many recent events and block waits to keep for inspection (bounded memory).
        on_audio: optional ``(t_start_s, block)`` called on the worker thread for every block before the detector
            takes it; ``t_start_s`` is the stream time of its first sample (lost audio included).
        on_swap: optional ``(old, new)`` called on the worker thread when :meth:`replace_detector` took effect.

    Raises:
        ConfigError: the detector's input rate is not the source's (here when the rate is known, else at
            :meth:`start`), or ``duration_s`` is not a positive number of seconds.
    """

    def __init__(self, detector, source: AudioSource,
                 on_event: Callable[[Event], None] | None = None, duration_s: float | None = None,
                 keep: int = 1000, on_audio: Callable[[float, np.ndarray], None] | None = None,
                 on_swap: Callable[[Any, Any], None] | None = None):
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ConfigError(f"duration must be a finite number of seconds > 0, or None; got {duration_s}")
        if not isinstance(source, AudioSource):
            raise TypeError(f"source must be an AudioSource (rate, blocks(), stop()), got {type(source).__name__}")
        self.detector = detector
        self.source = source
        self.on_event = on_event
        self.on_audio = on_audio
        self.on_swap = on_swap
        self.duration_s = duration_s
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()      # set when the worker has finished, source closed
        self._blocks = None
        self._pending = None                # a detector to use from the next block on
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.recent_events: deque[Event] = deque(maxlen=keep)   # the last ``keep`` events
        self.block_waits: deque[float] = deque(maxlen=keep)     # seconds the worker waited for each recent block
        self.onsets = 0                 # onset events so far
        self.events_total = 0           # events of either kind so far
        self.gaps = 0                   # gaps the detector was told about (a stall of drops counts once)
        self.gap_s = 0.0                # their total length in seconds
        self.samples_fed = 0            # samples given to the detectors of this run
        self.swaps = 0                  # detectors replaced while running
        self._windows_before = 0        # windows scored by the detectors replaced so far
        if source.rate is not None:
            self._check_rate(detector, source.rate)

    @property
    def all_events(self) -> list[Event]:
        """The most recent events (at most ``keep``; every event of a run shorter than that), oldest first."""
        return list(self.recent_events)

    @property
    def source_rate(self) -> int | None:
        """The stream's sample rate in Hz (None before a microphone is started)."""
        return self.source.rate

    @property
    def stream_s(self) -> float:
        """Stream time of the audio fed so far, in seconds: samples plus lost audio."""
        rate = self.source.rate
        return (self.samples_fed / rate if rate else 0.0) + self.gap_s

    @staticmethod
    def _check_rate(detector, rate: int) -> None:
        if detector.input_rate != rate:
            raise ConfigError(f"the detector takes {detector.input_rate} Hz but the source delivers {rate} Hz; build "
                              f"the detector for the stream: Detector(engine, DetectorConfig.from_model(engine.config)"
                              f".override(input_rate={rate}))")

    def _prepare(self) -> None:
        start = getattr(self.source, "start", None)
        started_here = False
        if self.source.rate is None and callable(start):
            start()
            started_here = True
        rate = self.source.rate
        try:
            if rate is None:
                raise ConfigError(f"the source {type(self.source).__name__} has no sample rate after start()")
            self._check_rate(self.detector, rate)
        except ConfigError:
            if started_here:
                self.source.stop()          # we opened it: close it again
            raise

    def replace_detector(self, detector) -> None:
        """Use ``detector`` (the caller's object, as it is) from the next block on; any thread.

        On the worker thread, between two blocks, the current detector is flushed (its open events close) and the
        new one continues on the stream's clock (its time starts where the stream is now, see ``Detector.gap``)
        and shares the stage timings. No audio is skipped. The new detector must take the stream's rate.

        Raises:
            ConfigError: ``detector.input_rate`` is not the stream's rate.
        """
        rate = self.source.rate
        if rate is not None:
            self._check_rate(detector, rate)
        with self._lock:
            self._pending = detector

    def _switch(self) -> None:
        with self._lock:
            new, self._pending = self._pending, None
        if new is None:
            return
        old = self.detector
        self._emit(old.flush())
        self._windows_before += old.windows_scored
        new.reset()
        new.gap(self.stream_s)              # its stream time 0 lies where this stream is now
        new.timer = old.timer
        self.detector = new
        self.swaps += 1
        if self.on_swap is not None:
            self.on_swap(old, new)

    def _emit(self, events: list[Event]) -> None:
        for e in events:
            self.recent_events.append(e)
            self.events_total += 1
            self.onsets += e.kind == "onset"
            if self.on_event is not None:
                self.on_event(e)

    def _gap(self, gap) -> None:
        rate = self.source.rate
        seconds = gap.length / rate
        self.gaps += 1
        self.gap_s += seconds
        why = "the detector fell behind and the ring overflowed" if gap.kind == "overrun" else \
            "the input stream skipped (its clock jumped)"
        log.warning("lost %.3f s of audio at %.3f s of the stream: %s", seconds, gap.start / rate, why)
        self._emit(self.detector.gap(seconds))

    def _work(self) -> None:
        rate = self.source.rate
        limit = None if self.duration_s is None else int(self.duration_s * rate)
        take_gaps = getattr(self.source, "take_gaps", None)
        try:
            t_wait = time.perf_counter()
            for block in self._blocks:
                self.block_waits.append(time.perf_counter() - t_wait)
                if self._stop.is_set():
                    break
                if self._pending is not None:
                    self._switch()
                if limit is not None:
                    block = block[: max(0, limit - self.samples_fed)]
                if block.shape[0]:
                    if self.on_audio is not None:
                        self.on_audio(self.stream_s, block)
                    self.samples_fed += block.shape[0]
                    self._emit(self.detector.push(block))
                if limit is not None and self.samples_fed >= limit:
                    break
                if callable(take_gaps):
                    for g in take_gaps():          # in stream order: after the audio before them
                        self._gap(g)
                t_wait = time.perf_counter()
        except AedError as e:               # a device that vanished, a corrupt file: one line
            if self._stop.is_set():         # asked to stop (Ctrl-C) while a frozen device held the read: a stop
                log.warning("stopped; the input also failed while stopping: %s", e)
            else:
                self.error = e
                log.error("%s", e)
        except Exception as e:  # reported to the consumer, never swallowed
            self.error = e
            log.exception("detector worker failed")
        finally:
            try:
                if self._pending is not None:
                    self._switch()
                self._emit(self.detector.flush())
            except Exception as e:  # noqa: BLE001 - keep the first error, still finish cleanly
                self.error = self.error or e
            try:
                close = getattr(self._blocks, "close", None)
                if callable(close):
                    close()                             # a generator's own clean-up (a file's reader)
                self.source.stop()                      # bounded: never waits on a frozen server
            except Exception as e:  # noqa: BLE001 - a failing close is reported, the run still ends
                self.error = self.error or e
            finally:
                self.finished_at = time.perf_counter()
                self._done.set()

    def start(self) -> "LiveRunner":
        """Start the source if it needs starting, check its rate against the detector's, start the worker.

        Raises:
            ConfigError: the detector's input rate is not the source's.
        """
        self._prepare()
        self._blocks = iter(self.source.blocks())
        self.started_at = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name="aed-detector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the worker to stop after the block it is on; it flushes the detector and stops the source."""
        self._stop.set()

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
        (one per stall), ``stalls`` the pauses of the callback stream, ours or the sound server's. The counters
        come from the source where it has them (a microphone), else they are 0. A remote engine's windows that
        could not be scored (``lost_windows``: its server was down) count into ``lost_s`` one hop each.
        """
        det = self.detector
        rate = self.source.rate or det.input_rate
        audio_s = self.samples_fed / rate
        wall = (self.finished_at or time.perf_counter()) - (self.started_at or time.perf_counter())
        stages = det.timer.summary()
        compute = sum(v["total_ms"] for v in stages.values()) / 1e3
        src = self.source
        lost_windows = int(getattr(det.engine, "lost_windows", 0) or 0)
        return {
            "audio_s": round(audio_s, 3),
            "wall_s": round(wall, 3),
            "windows": self._windows_before + det.windows_scored,
            "events": self.onsets,
            "overruns": getattr(src, "overruns", 0),
            "dropped_samples": getattr(src, "dropped_samples", 0),
            "input_overflows": getattr(src, "input_overflows", 0),
            "lost_s": round(float(getattr(src, "lost_s", 0.0)) + lost_windows * det.hop_s, 3),
            "lost_windows": lost_windows,
            "gaps": self.gaps,
            "stalls": getattr(src, "stalls", 0),
            "swaps": self.swaps,
            "rtf": round(compute / audio_s, 5) if audio_s > 0 else None,
            "stages": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in stages.items()},
            "error": None if self.error is None else str(self.error),
        }
