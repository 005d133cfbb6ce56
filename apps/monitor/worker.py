"""Glue between the live detector (worker threads) and the monitor window (GUI thread).

Capture runs on PortAudio's thread and detection on :class:`~realtime.pipeline.LiveRunner`'s
worker thread; neither ever waits for the GUI. Everything the window draws travels through one
unbounded ``queue.Queue`` of small messages that the GUI drains from a ``QTimer``: a slow or
hung GUI only lets messages pile up, it never blocks capture or loses audio. Qt is not imported
here, so this module is tested without a display.

Times are *session* seconds: a clock that starts when the monitor starts and keeps running
across detector rebuilds (threshold, window, hop, model) and across stop/start, so the events
collected so far stay on one time axis.

Example:
    >>> import numpy as np
    >>> from realtime import Detector, DetectorConfig, FrontEndConfig
    >>> from realtime.sources import ArraySource
    >>> class Zero:
    ...     labels = ["x"]
    ...     def infer(self, x): return np.zeros((x.shape[0], 1), np.float32)
    >>> w = MonitorWorker()
    >>> w.start(Detector(Zero(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64))),
    ...         ArraySource(np.zeros(32000, np.float32), 16000))
    >>> w.join(10)
    True
    >>> sorted({m.kind for m in w.drain()})
    ['finished', 'frames', 'level', 'scores']
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from realtime.events import Event

__all__ = ["Message", "SwitchableDetector", "MonitorWorker", "EventRecord", "EventLog", "recent_stage_ms"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One item on the worker -> GUI queue.

    ``kind`` is one of ``frames`` (data: raw log-mel ``(n, F)``, t: session time of the last frame's end),
    ``scores`` (data: ``(C,)``, t: window end), ``event`` (data: :class:`Event` in session time),
    ``level`` (data: ``(rms_dbfs, peak_dbfs)``, t: block end), ``swapped`` (data: the new detector),
    ``error`` (data: message text) and ``finished`` (data: the runner's summary dict). ``at`` is the
    ``perf_counter`` time it was posted.
    """

    kind: str
    t: float
    data: Any = None
    at: float = field(default_factory=time.perf_counter)     # when it was posted (latency measurements)


def _dbfs(x: float) -> float:
    return float(20.0 * np.log10(max(x, 1e-6)))


class SwitchableDetector:
    """A detector whose inner :class:`~realtime.detector.Detector` can be replaced while audio flows.

    :class:`~realtime.pipeline.LiveRunner` calls ``push``/``gap``/``flush`` on its worker thread; a
    replacement asked for from another thread (:meth:`request`) takes effect there, between two
    blocks: the old detector is flushed (its open events close), the new one continues the session
    clock where the old one stopped. No audio is skipped and no capture restarts.

    Args:
        detector: the first inner detector; its ``on_window``/``on_frames`` callbacks are replaced.
        post: where messages go (``queue.Queue.put``).
        t0: session time at which this detector's stream time 0 lies.
        on_audio: optional ``(t_start, block)`` hook for every raw block (worker thread; tests, recording).
    """

    def __init__(self, detector, post: Callable[[Message], None], t0: float = 0.0,
                 on_audio: Callable[[float, np.ndarray], None] | None = None):
        self._post = post
        self.on_audio = on_audio
        self._pending = None
        self._lock = threading.Lock()
        self.swaps = 0
        self._offset = float(t0)
        self._inner = self._wire(detector)

    def _wire(self, det):
        det.on_window = self._on_window
        det.on_frames = self._on_frames
        return det

    # -- what LiveRunner reads -----------------------------------------------------------------
    @property
    def inner(self):
        """The detector in use now."""
        return self._inner

    @property
    def input_rate(self) -> int:
        return self._inner.input_rate

    @property
    def timer(self):
        return self._inner.timer

    @property
    def samples_in(self) -> int:
        return self._inner.samples_in

    @property
    def windows_scored(self) -> int:
        return self._inner.windows_scored

    @property
    def labels(self) -> list[str]:
        return self._inner.labels

    @property
    def config(self):
        return self._inner.config

    @property
    def time_s(self) -> float:
        """Session time of the audio pushed so far."""
        return self._offset + self._inner.time_s

    def with_config(self, **changes) -> "SwitchableDetector":
        self._inner = self._wire(self._inner.with_config(**changes))
        return self

    # -- switching -----------------------------------------------------------------------------
    def request(self, detector) -> None:
        """Use ``detector`` from the next block on (any thread). It must take audio at the same input rate."""
        if detector.input_rate != self._inner.input_rate:
            raise ValueError(f"the new detector takes {detector.input_rate} Hz, the stream runs at "
                             f"{self._inner.input_rate} Hz")
        with self._lock:
            self._pending = detector

    def _switch(self) -> list[Event]:
        with self._lock:
            new, self._pending = self._pending, None
        if new is None:
            return []
        old = self._inner
        events = self._shift(old.flush())
        self._offset += old.time_s
        self._inner = self._wire(new)
        self.swaps += 1
        self._post(Message("swapped", self._offset, new))
        return events

    # -- the detector protocol -----------------------------------------------------------------
    def _shift(self, events: list[Event]) -> list[Event]:
        off = self._offset
        return [replace(e, onset_s=e.onset_s + off, offset_s=None if e.offset_s is None else e.offset_s + off)
                for e in events]

    def _on_window(self, t_end: float, scores: np.ndarray) -> None:
        self._post(Message("scores", self._offset + t_end, np.array(scores, dtype=np.float32)))

    def _on_frames(self, frames: np.ndarray) -> None:
        # called inside the inner detector's push, after the new frames are counted: time_s is their end
        self._post(Message("frames", self._offset + self._inner.time_s, np.array(frames, dtype=np.float32)))

    def push(self, chunk: np.ndarray) -> list[Event]:
        events = self._switch() if self._pending is not None else []
        if chunk.shape[0]:
            t_start = self.time_s
            peak = float(np.max(np.abs(chunk)))
            rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64))))
            if self.on_audio is not None:
                self.on_audio(t_start, chunk)
            self._post(Message("level", t_start + chunk.shape[0] / self.input_rate, (_dbfs(rms), _dbfs(peak))))
        return events + self._shift(self._inner.push(chunk))

    def gap(self, seconds: float) -> list[Event]:
        return self._shift(self._inner.gap(seconds))

    def flush(self) -> list[Event]:
        events = self._switch() if self._pending is not None else []
        return events + self._shift(self._inner.flush())


@dataclass
class EventRecord:
    """One event as the window lists it; ``offset_s`` is None while it is open (session seconds)."""

    label: str
    onset_s: float
    offset_s: float | None
    peak: float
    wall_time: float            # seconds since the epoch at the onset

    def duration_s(self, now: float | None = None) -> float | None:
        end = self.offset_s if self.offset_s is not None else now
        return None if end is None else end - self.onset_s


class EventLog:
    """Every event of a monitor session, kept across detector rebuilds; exports TSV.

    Example:
        >>> log = EventLog(wall_t0=0.0)
        >>> _ = log.add(Event("dog", 1.0, None, 0.8)); _ = log.add(Event("dog", 1.0, 1.5, 0.9, "offset"))
        >>> log.to_tsv().splitlines()[1].split("\\t")[1:]
        ['dog', '1.000', '1.500', '0.500', '0.900']
    """

    HEADER = "time\tlabel\tonset_s\toffset_s\tduration_s\tpeak_score"

    def __init__(self, wall_t0: float):
        self.wall_t0 = wall_t0
        self.records: list[EventRecord] = []
        self._open: dict[tuple[str, float], int] = {}

    def add(self, e: Event) -> tuple[int, EventRecord]:
        """Take an onset or offset event; returns the index of the record it created or closed."""
        key = (e.label, round(e.onset_s, 6))
        i = self._open.pop(key, None) if e.kind == "offset" else None
        if i is None:
            self.records.append(EventRecord(e.label, e.onset_s, e.offset_s, e.score, self.wall_t0 + e.onset_s))
            i = len(self.records) - 1
            if e.kind == "onset":
                self._open[key] = i
        else:
            r = self.records[i]
            r.offset_s, r.peak = e.offset_s, max(r.peak, e.score)
        return i, self.records[i]

    def open_records(self) -> list[EventRecord]:
        return [self.records[i] for i in self._open.values()]

    def to_tsv(self) -> str:
        lines = [self.HEADER]
        for r in self.records:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.wall_time)) + f"{r.wall_time % 1:.3f}"[1:]
            off = "" if r.offset_s is None else f"{r.offset_s:.3f}"
            dur = "" if r.offset_s is None else f"{r.offset_s - r.onset_s:.3f}"
            lines.append(f"{stamp}\t{r.label}\t{r.onset_s:.3f}\t{off}\t{dur}\t{r.peak:.3f}")
        return "\n".join(lines) + "\n"


def recent_stage_ms(timer, stages=("features", "inference", "post"), last: int = 50) -> dict[str, float]:
    """Mean milliseconds per call of the last ``last`` calls of each stage (cheap; any thread)."""
    out = {}
    for name in stages:
        samples = list(timer.samples.get(name, ())[-last:])
        out[name] = 1e3 * float(np.mean(samples)) if samples else float("nan")
    return out


class MonitorWorker:
    """Runs one live session at a time (a :class:`LiveRunner` on a :class:`SwitchableDetector`).

    The GUI calls :meth:`start`, :meth:`stop`, :meth:`replace_detector` and drains :meth:`drain`
    from its timer; nothing here touches Qt.

    Args:
        on_audio: optional raw-audio hook passed to :class:`SwitchableDetector`.
    """

    def __init__(self, on_audio: Callable[[float, np.ndarray], None] | None = None):
        self.queue: "queue.Queue[Message]" = queue.Queue()
        self.on_audio = on_audio
        self.runner = None
        self.detector: SwitchableDetector | None = None
        self.source = None
        self.t0 = time.monotonic()          # session clock origin
        self.wall_t0 = time.time()          # the wall-clock time of session time 0
        self._session_end = 0.0
        self._watcher: threading.Thread | None = None

    def session_time(self) -> float:
        """Session seconds now (wall clock since the monitor started)."""
        return time.monotonic() - self.t0

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def start(self, detector, source, duration_s: float | None = None) -> None:
        """Start detecting from ``source`` (a started-or-not ``MicrophoneCapture``, a ``FileSource``...).

        The detector must already take audio at the source's rate (``config.input_rate``).

        Raises:
            DeviceError: the microphone cannot be opened.
            ValueError: an unsupported sample rate.
        """
        from realtime.pipeline import LiveRunner

        if self.running:
            raise RuntimeError("the monitor is already running; stop it first")
        t_start = max(self.session_time(), self._session_end)
        self.detector = SwitchableDetector(detector, self.queue.put, t0=t_start, on_audio=self.on_audio)
        self.source = source
        self.runner = LiveRunner(self.detector, source, on_event=lambda e: self.queue.put(Message("event", e.onset_s, e)),
                                 duration_s=duration_s)
        self.runner.start()
        self._watcher = threading.Thread(target=self._watch, args=(self.runner,), name="aed-monitor-watch",
                                         daemon=True)
        self._watcher.start()

    def _watch(self, runner) -> None:
        runner.join()
        self._session_end = runner.detector.time_s
        if runner.error is not None:
            self.queue.put(Message("error", self._session_end, str(runner.error)))
        self.queue.put(Message("finished", self._session_end, runner.summary()))

    def replace_detector(self, detector) -> None:
        """Swap in a rebuilt detector (new threshold, window, hop or engine) without stopping the stream."""
        if self.detector is None or not self.running:
            raise RuntimeError("nothing is running")
        self.detector.request(detector)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the running session; True when its worker has ended."""
        if self.runner is None:
            return True
        self.runner.stop()
        ok = self.runner.join(timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)
        return ok

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the session to end by itself (source exhausted or ``duration_s`` reached)."""
        if self.runner is None:
            return True
        ok = self.runner.join(timeout)
        if ok and self._watcher is not None:
            self._watcher.join(timeout)
        return ok

    def drain(self, limit: int = 100_000) -> list[Message]:
        """Everything queued so far (GUI thread)."""
        out = []
        try:
            while len(out) < limit:
                out.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return out

    def status(self) -> dict[str, Any]:
        """Counters for the status bar: overruns, dropped samples, input overflows, lost audio (s), stage ms."""
        src = self.source
        ring = getattr(src, "ring", None)
        det = self.detector
        return {
            "overruns": getattr(ring, "overruns", 0) if ring is not None else 0,
            "dropped_samples": getattr(ring, "dropped_samples", 0) if ring is not None else 0,
            "input_overflows": getattr(src, "input_overflows", 0),
            "lost_s": float(getattr(src, "lost_s", 0.0)),
            "gaps": self.runner.gaps if self.runner is not None else 0,
            "stage_ms": recent_stage_ms(det.timer) if det is not None else {},
            "swaps": det.swaps if det is not None else 0,
        }
