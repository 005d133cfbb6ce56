"""Glue between the live detector (worker threads) and the monitor window (GUI thread).

Capture runs on PortAudio's thread and detection on :class:`~realtime.pipeline.LiveRunner`'s
worker thread; neither ever waits for the GUI. Everything the window draws travels through one
unbounded ``queue.Queue`` of small messages that the GUI drains from a ``QTimer``: a slow or
hung GUI only lets messages pile up, it never blocks capture or loses audio. Qt is not imported
here, so this module is tested without a display.

Times are *session* seconds: a clock that starts when the monitor starts and keeps running
across detector rebuilds (threshold, window, hop, model) and across stop/start, so the events
collected so far stay on one time axis. The runner and its detector keep *stream* time (seconds
into this run's source: the file's own time for a replayed file); the worker adds the run's start.

The worker owns the current detector: the window builds one for the stream's rate and hands it to
:meth:`MonitorWorker.start` or :meth:`MonitorWorker.replace_detector`; the runner swaps it in between
two blocks (:meth:`realtime.pipeline.LiveRunner.replace_detector`). There is no proxy around it.

Example:
    >>> import numpy as np
    >>> from realtime import Detector, DetectorConfig, FrontEndConfig
    >>> from realtime.sources import ArraySource
    >>> class Zero:
    ...     labels = ["x"]
    ...     def infer(self, x): return np.zeros((x.shape[0], 1), np.float32)
    >>> w = MonitorWorker()
    >>> w.start(Detector(Zero(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64), input_rate=16000)),
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

__all__ = ["Message", "MonitorWorker", "EventRecord", "EventLog", "recent_stage_ms"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One item on the worker -> GUI queue.

    ``kind`` is one of ``frames`` (data: raw log-mel ``(n, F)``, t: session time of the last frame's end),
    ``scores`` (data: ``(C,)``, t: window end), ``event`` (data: :class:`Event` in session time),
    ``level`` (data: ``(rms_dbfs, peak_dbfs)``, t: block end), ``swapped`` (data: the new detector),
    ``error`` (data: message text) and ``finished`` (data: the runner's summary dict). ``stream_t`` is
    ``t`` in stream time (seconds into this run's source). ``at`` is the ``perf_counter`` time it was posted.
    """

    kind: str
    t: float
    data: Any = None
    stream_t: float | None = None
    at: float = field(default_factory=time.perf_counter)     # when it was posted (latency measurements)


def _dbfs(x: float) -> float:
    return float(20.0 * np.log10(max(x, 1e-6)))


@dataclass
class EventRecord:
    """One event as the window lists it; ``offset_s`` is None while it is open (session seconds).

    ``file_s`` is the onset in the replayed file's own time (None for live input): what the event list shows
    for a file, where the wall-clock time of the replay would mean nothing.
    """

    label: str
    onset_s: float
    offset_s: float | None
    peak: float
    wall_time: float            # seconds since the epoch at the onset
    file_s: float | None = None

    def time_text(self) -> str:
        """The event list's time column: ``m:ss.sss`` into the file for a replayed file, else the wall clock."""
        if self.file_s is not None:
            m, s = divmod(max(0.0, self.file_s), 60.0)
            return f"{int(m)}:{s:06.3f}"
        return time.strftime("%H:%M:%S", time.localtime(self.wall_time)) + f"{self.wall_time % 1:.3f}"[1:]

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

    def add(self, e: Event, file_s: float | None = None) -> tuple[int, EventRecord]:
        """Take an onset or offset event (session time; ``file_s``: its onset in the replayed file, None for live
        input); returns the index of the record it created or closed."""
        key = (e.label, round(e.onset_s, 6))
        i = self._open.pop(key, None) if e.kind == "offset" else None
        if i is None:
            self.records.append(EventRecord(e.label, e.onset_s, e.offset_s, e.score, self.wall_t0 + e.onset_s,
                                            file_s))
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
    """Runs one live session at a time: a :class:`~realtime.pipeline.LiveRunner` on the current detector.

    The GUI calls :meth:`start`, :meth:`stop`, :meth:`replace_detector` and drains :meth:`drain`
    from its timer; nothing here touches Qt. The worker sets the ``on_window``/``on_frames`` callbacks of the
    detectors it is given, so that their windows and frames reach the queue.

    Args:
        on_audio: optional ``(t_start, block)`` hook for every raw block (worker thread, session time; tests,
            recording).
    """

    def __init__(self, on_audio: Callable[[float, np.ndarray], None] | None = None):
        self.queue: "queue.Queue[Message]" = queue.Queue()
        self.on_audio = on_audio
        self.runner = None
        self.source = None
        self.t0 = time.monotonic()          # session clock origin
        self.wall_t0 = time.time()          # the wall-clock time of session time 0
        self.run_t0 = 0.0                   # session time at which this run's stream time 0 lies
        self.file_time = False              # this run replays a file: events carry their time in it
        self._session_end = 0.0
        self._watcher: threading.Thread | None = None

    def session_time(self) -> float:
        """Session seconds now (wall clock since the monitor started)."""
        return time.monotonic() - self.t0

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    @property
    def detector(self):
        """The detector in use now (the last run's after it ended; None before any run)."""
        return None if self.runner is None else self.runner.detector

    @property
    def swaps(self) -> int:
        """Detectors replaced during the current (or last) run."""
        return 0 if self.runner is None else self.runner.swaps

    def start(self, detector, source, duration_s: float | None = None, file_time: bool = False) -> None:
        """Start detecting from ``source`` (a started-or-not ``MicrophoneCapture``, a ``FileSource``...).

        Args:
            detector: built for the source's rate (``config.input_rate``); the runner refuses another.
            source: an :class:`~realtime.audio_source.AudioSource`.
            duration_s: stop after this much audio.
            file_time: the source replays a file; its events carry their time in the file (``EventRecord.file_s``).

        Raises:
            DeviceError: the microphone cannot be opened.
            ConfigError: the detector takes another rate than the source's.
        """
        from realtime.pipeline import LiveRunner

        if self.running:
            raise RuntimeError("the monitor is already running; stop it first")
        self.run_t0 = max(self.session_time(), self._session_end)
        self.file_time = file_time
        self.source = source
        self._wire(detector)
        self.runner = LiveRunner(detector, source, on_event=self._on_event, duration_s=duration_s,
                                 on_audio=self._on_audio, on_swap=self._on_swap)
        try:
            self.runner.start()
        except BaseException:
            self.runner = None
            raise
        self._watcher = threading.Thread(target=self._watch, args=(self.runner,), name="aed-monitor-watch",
                                         daemon=True)
        self._watcher.start()

    # -- worker thread: stream time in, session time out -----------------------------------------
    def _wire(self, det) -> None:
        det.on_window = self._on_window
        det.on_frames = lambda frames: self._on_frames(det, frames)

    def _on_window(self, t_end: float, scores: np.ndarray) -> None:
        self.queue.put(Message("scores", self.run_t0 + t_end, np.array(scores, dtype=np.float32), t_end))

    def _on_frames(self, det, frames: np.ndarray) -> None:
        # called inside the detector's push, after the new frames are counted: time_s is their end
        t = det.time_s
        self.queue.put(Message("frames", self.run_t0 + t, np.array(frames, dtype=np.float32), t))

    def _on_audio(self, t_start: float, block: np.ndarray) -> None:
        peak = float(np.max(np.abs(block)))
        rms = float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))
        t = self.run_t0 + t_start
        if self.on_audio is not None:
            self.on_audio(t, block)
        t_end = t_start + block.shape[0] / self.source.rate
        self.queue.put(Message("level", self.run_t0 + t_end, (_dbfs(rms), _dbfs(peak)), t_end))

    def _on_event(self, e: Event) -> None:
        off = self.run_t0
        shifted = replace(e, onset_s=e.onset_s + off, offset_s=None if e.offset_s is None else e.offset_s + off)
        self.queue.put(Message("event", shifted.onset_s, shifted, e.onset_s))

    def _on_swap(self, old, new) -> None:
        self.queue.put(Message("swapped", self.run_t0 + new.time_s, new, new.time_s))

    def _watch(self, runner) -> None:
        runner.join()
        self._session_end = self.run_t0 + runner.stream_s
        if runner.error is not None:
            self.queue.put(Message("error", self._session_end, str(runner.error)))
        self.queue.put(Message("finished", self._session_end, runner.summary()))

    # -- GUI thread ---------------------------------------------------------------------------------
    def replace_detector(self, detector) -> None:
        """Swap in a rebuilt detector (new threshold, window, hop or engine) without stopping the stream.

        Raises:
            RuntimeError: nothing is running.
            ConfigError: the detector takes another rate than the stream's.
        """
        if not self.running:
            raise RuntimeError("nothing is running")
        self._wire(detector)
        self.runner.replace_detector(detector)

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
        det = self.detector
        return {
            "overruns": getattr(src, "overruns", 0),
            "dropped_samples": getattr(src, "dropped_samples", 0),
            "input_overflows": getattr(src, "input_overflows", 0),
            "lost_s": float(getattr(src, "lost_s", 0.0)),
            "gaps": self.runner.gaps if self.runner is not None else 0,
            "stage_ms": recent_stage_ms(det.timer) if det is not None else {},
            "swaps": self.swaps,
        }
