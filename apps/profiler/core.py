"""The latency profiler's measurement: real-time replay, per-chunk stage timings, injected-event latency.

Audio is cut into segments, one injected event (burst) per segment. Every *session* (one engine at
one window/hop) has its own :class:`~realtime.detector.Detector`; segments are replayed at real-time
pace to the sessions in round-robin order, rotated every segment, so that drift on a busy machine
affects each session alike. With a synthetic or file source every session sees the same audio as
one contiguous stream; with a microphone each session gets its own live slots (reset per slot).

A block of the paced source is delivered when its *last* sample is due, as a capture device delivers
it. The end-to-end latency of an event is ``emit wall time - wall time its first sample was due``,
split exactly into four parts (they telescope):

- ``hop_wait``: from the first sample until the last sample of the first window holding it is due;
- ``smoothing``: extra stream time until the window whose scoring emitted the onset (the model
  needing more of the event, and hysteresis / minimum duration);
- ``buffering``: from that window's last sample being due until the worker starts the chunk holding
  it (capture block, resampler delay, queueing behind earlier work);
- ``compute``: from the start of that chunk until the onset comes out of the tracker.

The clock is injectable (:class:`Clock`), so tests can check the arithmetic with a fake one.

Example:
    >>> from tests.audio_helpers import LoudnessEngine                    # doctest: +SKIP
    >>> prof = Profiler([EngineSpec("ref", LoudnessEngine())], source=SyntheticSource(bursts=3))  # doctest: +SKIP
    >>> result = prof.run(); result.sessions[0].latency_summary()["total"]["p50_ms"]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from apps.profiler.sources import (
    Burst, FileReplaySource, LoudnessReference, LoudnessTrigger, MicSource, SyntheticSource, _PacedSource, burst_track,
    read_events_tsv,
)
from realtime.config import FrontEndConfig, WindowConfig
from realtime.detector import Detector, DetectorConfig
from realtime.stats import summarize

__all__ = ["Clock", "RealClock", "Burst", "EngineSpec", "LoudnessTrigger", "LoudnessReference", "SyntheticSource",
           "FileReplaySource", "MicSource", "Session", "Profiler", "ProfileResult", "burst_track", "read_events_tsv",
           "STAGES", "LATENCY_PARTS", "WindowGrid", "InjectedEvent", "Pairing", "paced_events", "mic_events",
           "pair_onset", "attribute_latency", "attribute_session"]

log = logging.getLogger(__name__)

STAGES = ("resample", "features", "windows", "inference", "post")
LATENCY_PARTS = ("hop_wait", "smoothing", "buffering", "compute")


class Clock:
    """Wall clock and sleep, injectable for tests."""

    def now(self) -> float:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class RealClock(Clock):
    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class EngineSpec:
    """A named engine to profile (``kind`` is what the user asked for, e.g. ``onnxruntime``)."""

    kind: str
    engine: Any
    trigger: str = "model"          # 'model' or 'loudness' (reference decision, model still computed)


# -- sessions ----------------------------------------------------------------------------------------------------


@dataclass
class Session:
    """One engine at one window/hop: its detector and every raw timing it produced."""

    kind: str
    engine_name: str
    trigger: str
    window_s: float
    hop_s: float
    detector: Detector
    chunks: list[dict] = field(default_factory=list)        # per chunk: due, start, end, wait, stage seconds, windows
    emitted: list[dict] = field(default_factory=list)       # per onset: wall, stream times, chunk index
    latencies: list[dict] = field(default_factory=list)
    missed: list[float] = field(default_factory=list)
    unmeasured: list[float] = field(default_factory=list)     # detected across a segment boundary: not timed
    audio_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.kind} w{self.window_s:g}/h{self.hop_s:g}"

    def stage_samples(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.detector.timer.samples.items()}

    def stage_summary(self) -> dict[str, dict]:
        """Per-stage p50/p95/p99/max: per call for the front end, per window for inference and post."""
        out = {"ring_wait": summarize([c["wait"] for c in self.chunks])}
        for st in ("resample", "features", "windows"):
            out[st] = summarize([c["stages"].get(st, 0.0) for c in self.chunks])
        per_win = [c["stages"]["inference"] / c["windows"] for c in self.chunks if c["windows"]]
        out["inference_per_window"] = summarize(per_win)
        out["post_per_window"] = summarize(self.detector.timer.samples.get("post", []))
        out["frontend_per_hop"] = summarize(self.frontend_per_hop())
        out["other_per_chunk"] = summarize([c["other"] for c in self.chunks])
        out["chunk_total"] = summarize([c["end"] - c["start"] for c in self.chunks])
        return out

    def frontend_per_hop(self) -> list[float]:
        """Resample + features + window assembly summed over the chunks of each hop."""
        out, acc = [], 0.0
        for c in self.chunks:
            acc += sum(c["stages"].get(st, 0.0) for st in ("resample", "features", "windows"))
            if c["windows"]:
                out += [acc / c["windows"]] * c["windows"]
                acc = 0.0
        return out

    def latency_summary(self) -> dict[str, dict]:
        return {p: summarize([r[p] for r in self.latencies]) for p in ("total", *LATENCY_PARTS)}

    def cost(self) -> dict[str, Any]:
        tot = {st: sum(c["stages"].get(st, 0.0) for c in self.chunks) for st in STAGES}
        compute = sum(tot.values())
        tot["other"] = sum(c["other"] for c in self.chunks)
        a = self.audio_s or float("nan")
        late = sum(1 for c in self.chunks if c["start"] - c["due"] > self.detector.hop_s)
        return {"audio_s": self.audio_s, "windows": self.detector.windows_scored,
                "windows_per_s": self.detector.windows_scored / a, "rtf": compute / a,
                "frontend_inference_share": (tot["resample"] + tot["features"] + tot["windows"] + tot["inference"]) / a,
                "cpu_share": self.cpu_s / a, "stage_totals_s": tot, "late_chunks": late,
                "detected": len(self.latencies), "missed": len(self.missed), "unmeasured": len(self.unmeasured)}


# -- latency attribution -----------------------------------------------------------------------------------------
# Three steps, one function each: where every injected event sits on its replay (:func:`paced_events`,
# :func:`mic_events`), which emitted onset answers it (:func:`pair_onset`), and how its latency splits into
# ``LATENCY_PARTS`` (:func:`attribute_latency`). :func:`attribute_session` runs them over one session's record.


@dataclass(frozen=True)
class WindowGrid:
    """Where a session's windows fall in stream time: front end, window and hop in frames, and the labels.

    Example:
        >>> grid = WindowGrid(FrontEndConfig(num_mel_bins=64), T=100, hop_frames=10, window_s=1.0, labels=("burst",))
        >>> grid.first_window_end(1.535), grid.need_time(160)
        (160, 1.615)
    """

    frontend: FrontEndConfig
    T: int
    hop_frames: int
    window_s: float
    labels: tuple[str, ...]

    @classmethod
    def of(cls, det: Detector) -> "WindowGrid":
        """The grid a detector scores windows on."""
        return cls(det.config.frontend, det.T, det.hop_frames, det.window_s, tuple(det.labels))

    def first_window_end(self, t_s: float) -> int:
        """End frame of the first window on the hop grid that holds the stream sample at ``t_s`` seconds."""
        fe = self.frontend
        k = max(0, math.floor((t_s * fe.sample_rate - fe.frame_length) / fe.frame_shift) + 1)  # first frame holding it
        return self.T + max(0, math.ceil((k + 1 - self.T) / self.hop_frames)) * self.hop_frames

    def need_time(self, end_frame: int) -> float:
        """Stream time at which the last sample of the window ending at ``end_frame`` is in."""
        fe = self.frontend
        return ((end_frame - 1) * fe.frame_shift + fe.frame_length) / fe.sample_rate


@dataclass(frozen=True)
class InjectedEvent:
    """One injected event as one session's replay met it.

    Attributes:
        t_s: stream time of its first sample, in seconds.
        label: its ground-truth label; None (or a label the model lacks) lets any label answer it.
        wall_s: wall time its first sample was due (``wall_of(t_s)``).
        wall_of: stream time -> wall time a sample at that time was due, on this replay's clock.
        segment: index of the replay segment it lies in.
    """

    t_s: float
    label: str | None
    wall_s: float
    wall_of: Callable[[float], float]
    segment: int


def paced_events(bursts: Sequence[Burst], segments: Sequence[Mapping[str, Any]], rate: int) -> list[InjectedEvent]:
    """The bursts of a paced source (at ``rate``), each on the replay of the segment that holds it: ``segments`` are
    one session's replays (``lo``/``hi`` sample range, ``anchor``: wall time of stream sample 0 on that replay, ``k``:
    index). Bursts in a segment never replayed (an interrupted run) are left out."""
    out = []
    for b in bursts:
        i = int(round(b.onset_s * rate))
        seg = next((g for g in segments if g["lo"] <= i < g["hi"]), None)
        if seg is not None:
            anchor = seg["anchor"]
            out.append(InjectedEvent(b.onset_s, b.label, anchor + b.onset_s, lambda t, a=anchor: a + t, seg["k"]))
    return out


def mic_events(segments: Sequence[Mapping[str, Any]], src: MicSource) -> list[InjectedEvent | None]:
    """The burst of each microphone slot where it was heard in the capture; None for a slot where it never was.

    Each slot's stream restarts at its first captured sample ``g0`` (the detector is reset per slot); wall times
    come from the capture callbacks (:meth:`MicSource.due`).
    """
    out: list[InjectedEvent | None] = []
    for seg in segments:
        i = seg.get("onset_i")
        if i is None:
            out.append(None)
            continue
        g0 = seg["g0"]
        out.append(InjectedEvent(i / src.rate, None, src.due(g0 + i),
                                 lambda t, g0=g0: src.due(g0 + int(round(t * src.rate))), seg["k"]))
    return out


@dataclass(frozen=True)
class Pairing:
    """What :func:`pair_onset` found for one event.

    Attributes:
        outcome: ``detected``, ``missed`` or ``unmeasured`` (answered, but in a later segment).
        onset: the answering record of ``Session.emitted`` (None when missed).
        first_end: end frame of the first window holding the event's first sample.
    """

    outcome: str
    onset: dict | None
    first_end: int


def pair_onset(event: InjectedEvent, emitted: Sequence[Mapping[str, Any]], chunks: Sequence[Mapping[str, Any]],
               grid: WindowGrid) -> Pairing:
    """The first emitted onset that answers ``event``.

    An onset answers it when its window holds the event's first sample (it ends at or after the first window
    that does), its window is complete within ``window + 1 s`` of the event, its label is the event's (when the
    model knows that label), and its chunk was replayed in the event's segment or later. One that came out in a
    later segment makes the event ``unmeasured``: a replay pause lies between them, so no single wall clock does.
    """
    first_end = grid.first_window_end(event.t_s)
    horizon = event.t_s + grid.window_s + 1.0
    known = event.label if event.label in grid.labels else None

    def answers(e: Mapping[str, Any]) -> bool:
        t_need = grid.need_time(e["end_frame"])
        return (event.t_s <= t_need <= horizon and e["end_frame"] >= first_end
                and (known is None or e["label"] == known) and chunks[e["chunk"]]["seg"] >= event.segment)

    hit = next((e for e in emitted if answers(e)), None)
    if hit is None:
        return Pairing("missed", None, first_end)
    return Pairing("detected" if chunks[hit["chunk"]]["seg"] == event.segment else "unmeasured", hit, first_end)


def attribute_latency(event: InjectedEvent, onset: Mapping[str, Any], chunk_start: float, first_end: int,
                      grid: WindowGrid) -> dict[str, Any]:
    """Split the latency from ``event`` to its ``onset`` into ``LATENCY_PARTS`` (they add up to ``total``).

    Args:
        event: the injected event.
        onset: the emitted onset that answers it (``wall``, ``end_frame``, ``label``).
        chunk_start: wall time the worker started the chunk that emitted the onset.
        first_end: end frame of the first window holding the event's first sample.
        grid: the session's window grid.

    Returns:
        ``t_s``, ``label``, ``total`` and the parts in seconds, and ``windows_late`` (hops from the first window
        holding the event to the one that emitted the onset).
    """
    t_first, t_emit = grid.need_time(first_end), grid.need_time(onset["end_frame"])
    return {"t_s": event.t_s, "label": onset["label"], "total": onset["wall"] - event.wall_s,
            "hop_wait": event.wall_of(t_first) - event.wall_s,
            "smoothing": event.wall_of(t_emit) - event.wall_of(t_first),
            "buffering": chunk_start - event.wall_of(t_emit), "compute": onset["wall"] - chunk_start,
            "windows_late": (onset["end_frame"] - first_end) // grid.hop_frames}


def attribute_session(s: Session, events: Iterable[InjectedEvent | None]) -> None:
    """Pair and attribute each event of one session, in order, filing it under ``s.latencies`` (detected, with its
    parts), ``s.missed`` or ``s.unmeasured`` (stream times; NaN for a microphone slot whose burst was never heard)."""
    grid = WindowGrid.of(s.detector)
    for ev in events:
        if ev is None:
            s.missed.append(float("nan"))
            continue
        pairing = pair_onset(ev, s.emitted, s.chunks, grid)
        if pairing.outcome == "missed":
            s.missed.append(ev.t_s)
        elif pairing.outcome == "unmeasured":
            s.unmeasured.append(ev.t_s)
        else:
            chunk_start = s.chunks[pairing.onset["chunk"]]["start"]
            s.latencies.append(attribute_latency(ev, pairing.onset, chunk_start, pairing.first_end, grid))


@dataclass
class ProfileResult:
    sessions: list[Session]
    source: str
    wall_s: float
    process_cpu_s: float
    peak_rss_kb: int
    interrupted: bool = False
    capture: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Profiler:
    """Replays a source to every (engine, window, hop) session, alternating, and measures everything.

    Args:
        engines: engines to compare.
        source: a :class:`SyntheticSource`, :class:`FileReplaySource` or :class:`MicSource`.
        windows: window lengths in seconds (a sweep); hops: hops in seconds.
        clock: wall clock (default :class:`RealClock`).
        pace: replay at real-time pace (False only for tests with a fake clock).
        overrides: the user's detector settings by field name (``apps.common.detector_overrides``), over the
            model's own through ``DetectorConfig.from_model(...).override(...)``; the window and hop are the sweep's.
        warmup: run a few inferences per session before measuring.
        on_progress: called after every segment with ``(done, total, sessions)``.
    """

    def __init__(self, engines: Sequence[EngineSpec], source: Any, windows: Sequence[float] = (1.0,),
                 hops: Sequence[float] = (0.1,), clock: Clock | None = None,
                 overrides: Mapping[str, Any] | None = None, warmup: bool = True,
                 on_progress: Callable[[int, int, list[Session]], None] | None = None):
        self.clock = clock or RealClock()
        self.source = source
        self.on_progress = on_progress
        self.warmup = warmup
        self._stop = False
        self._segment = 0
        self.sessions: list[Session] = []
        if getattr(source, "live", False) and source.capture is None:
            source.start()                                    # the device's rate is known once it is open
        rate = getattr(source, "rate", None)
        for spec in engines:
            for w in windows:
                for h in hops:
                    eng = spec.engine if spec.trigger == "model" else LoudnessTrigger(spec.engine)
                    cfg = DetectorConfig.from_model(getattr(eng, "config", None)).override(
                        **dict(overrides or {}), window=WindowConfig(w, h), input_rate=rate)
                    s = Session(spec.kind, getattr(eng, "name", type(eng).__name__), spec.trigger, w, h,
                                Detector(eng, cfg))
                    self.sessions.append(s)

    def warm_up(self, calls: int = 3) -> None:
        """A few inferences per session at its window length, so first-call costs stay out of the figures."""
        for s in self.sessions:
            det = s.detector
            x = np.zeros((1, det.T, det.config.frontend.num_mel_bins), np.float32)   # (B, T, F)
            for _ in range(calls):
                det.engine.infer(x)

    def stop(self) -> None:
        """Ask the run to end after the current block (safe from a signal handler or another thread)."""
        self._stop = True

    # -- one chunk ---------------------------------------------------------------------------------------------
    def _process(self, s: Session, block: np.ndarray, due: float, wait: float, start: float) -> None:
        det = s.detector
        mark = det.timer.mark()                  # a position in timer.samples means nothing once its ring wraps
        cpu0 = time.thread_time()
        wins = det.feed(block)
        n_chunk = len(s.chunks)
        if wins:
            scores = det.score(wins)
            for w, sc in zip(wins, scores):
                events = det.accept([w], sc[None])
                t_emit = self.clock.now()
                for e in events:
                    if e.kind == "onset":
                        s.emitted.append({"wall": t_emit, "onset_s": e.onset_s, "label": e.label, "score": e.score,
                                          "end_frame": w.end_frame, "chunk": n_chunk})
        end = self.clock.now()
        s.cpu_s += time.thread_time() - cpu0
        s.audio_s += block.shape[0] / det.input_rate
        added = det.timer.since(mark)
        stages = {st: float(sum(added.get(st, []))) for st in STAGES}
        s.chunks.append({"due": due, "start": start, "end": end, "wait": wait, "windows": len(wins),
                         "n": int(block.shape[0]), "seg": self._segment, "stages": stages,
                         "other": (end - start) - sum(stages.values())})   # checks, timer overhead, glue

    # -- the run -----------------------------------------------------------------------------------------------
    def _paced_segment(self, s: Session, k: int) -> dict:
        src = self.source
        t_seg = self.clock.now()
        lo = k * src.seg_len
        anchor = t_seg - lo / src.rate                       # wall time of stream sample 0 for this segment
        for pos, block in src.blocks(k):
            if self._stop:
                break
            due = anchor + (pos + block.shape[0]) / src.rate
            t0 = self.clock.now()
            self.clock.sleep(due - t0)
            start = self.clock.now()
            self._process(s, block, due, start - t0, start)
        return {"anchor": anchor, "lo": lo, "hi": lo + src.seg_len}

    def _mic_segment(self, s: Session, k: int) -> dict:
        src = self.source
        import sounddevice as sd

        s.detector.reset()
        g0, onset_i = src.read_total, None
        min_i = int(s.detector.window_s * src.rate)      # ignore anything before the first full window
        sd.play(src.track, src.track_rate, device=src.output_device)
        t_end = self.clock.now() + src.segment_s + 0.3
        while self.clock.now() < t_end and not self._stop:
            t0 = self.clock.now()
            block = src.capture.read(timeout=0.1)
            start = self.clock.now()
            if block.shape[0]:
                g = src.read_total
                src.read_total += block.shape[0]
                self._process(s, block, src.due(src.read_total), start - t0, start)
                if onset_i is None:
                    loud = np.flatnonzero(np.abs(block) > src.detect_level)
                    loud = loud[g - g0 + loud >= min_i]
                    if loud.size:
                        onset_i = int(g - g0 + loud[0])
        sd.stop()
        return {"g0": g0, "g1": src.read_total, "onset_i": onset_i}

    def run(self) -> ProfileResult:
        """Replay every segment to every session (rotating the order each segment); Ctrl-C ends cleanly."""
        src = self.source
        n = len(self.sessions)
        if self.warmup:
            self.warm_up()
        total = src.n_segments * n
        wall0, cpu0 = self.clock.now(), time.process_time()
        segs: dict[int, list[dict]] = {i: [] for i in range(n)}
        interrupted, done = False, 0
        try:
            for k in range(src.n_segments):
                for j in range(n):
                    i = (k + j) % n
                    if self._stop:
                        raise KeyboardInterrupt
                    self._segment = k
                    seg = (self._mic_segment if src.live else self._paced_segment)(self.sessions[i], k)
                    seg.update(k=k, chunk_hi=len(self.sessions[i].chunks))
                    segs[i].append(seg)
                    done += 1
                    if self.on_progress is not None:
                        self.on_progress(done, total, self.sessions)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted after %d of %d segment runs; reporting what was measured", done, total)
        finally:
            if src.live:
                src.stop()
        result = ProfileResult(self.sessions, getattr(src, "name", "?"), self.clock.now() - wall0,
                               time.process_time() - cpu0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                               interrupted)
        for i, s in enumerate(self.sessions):
            attribute_session(s, self._injected_events(segs[i]))
        if src.live:
            cap = src.capture
            ct = np.asarray(cap.callback_times)
            result.capture = {"callback_intervals_s": np.diff(ct).tolist(), "nominal_block_s": src.blocksize / src.rate,
                              "input_overflows": cap.input_overflows, "overruns": cap.overruns,
                              "dropped_samples": cap.ring.dropped_samples if cap.ring else 0, "rate": src.rate}
        return result

    def _injected_events(self, segs: list[dict]) -> list[InjectedEvent | None]:
        """The events one session's replay met (:func:`mic_events` or :func:`paced_events`)."""
        src = self.source
        return mic_events(segs, src) if getattr(src, "live", False) else paced_events(src.bursts, segs, src.rate)
