"""The streaming detector: audio chunks in, events out; the same object tags whole files.

Example:
    >>> import numpy as np
    >>> class Loudness:                      # any object with infer() and labels is an engine
    ...     labels = ["loud"]
    ...     def infer(self, x):              # (B, T, F) -> (B, C)
    ...         return (x.max(axis=(1, 2)) > 0.5).astype(np.float32)[:, None]
    >>> det = Detector(Loudness(), DetectorConfig(frontend=FrontEndConfig(num_mel_bins=64)))
    >>> audio = np.zeros(32000, np.float32); audio[16000:24000] = 0.5 * np.sin(np.arange(8000))
    >>> [(e.kind, e.label) for e in det.process(audio)]
    [('onset', 'loud'), ('offset', 'loud')]
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import numpy as np

from realtime.config import (
    MAX_BATCH, ONSET_ANCHORS, ONSET_SOURCES, DetectionSettings, FrontEndConfig, ModelConfig, WindowConfig, check_number,
    seconds_to_frames,
)
from realtime.errors import AudioError, ConfigError
from realtime.events import Event, EventTracker
from realtime.frontend import StreamingFbank, normalize, silence_frame
from realtime.onsets import OnsetEnvelope
from realtime.resample import StreamingResampler, check_rate
from realtime.stats import StageTimer
from realtime.validate import check_audio

__all__ = ["Detector", "DetectorConfig", "PendingWindow", "ONSET_ANCHORS", "ONSET_SOURCES"]

@dataclass(frozen=True)
class DetectorConfig:
    """Everything the detector needs besides the engine; left out, it comes from the model's metadata.

    Attributes:
        frontend: log-mel settings (from the model).
        window: window and hop in seconds.
        threshold: default opening threshold.
        thresholds: per-class thresholds by label.
        release_ratio: release threshold as a fraction of the opening one.
        min_duration_s: shortest event that is reported.
        merge_gap_s: dips shorter than this do not split an event.
        input_rate: sample rate of the audio given to ``push``/``process``; resampled to the model's.
        batch_size: windows per ``infer`` call (a backlog is scored in batches).
        onset_anchor: where in a window that crosses the threshold the event's ``onset_s`` is placed:
            ``"newest"`` (the window's last hop; right for a detector that fires on the first loud frame)
            or ``"centre"`` (the window's middle; right for a classifier that needs a good part of the
            event inside its window before it scores it). Offsets are placed at the centre of the first
            window below the release threshold either way. This changes the time stamps only, never
            when an event is emitted.
        onset_source: ``"clip"`` (the tracker follows each window's clip score) or ``"frames"`` (it follows
            the frame head's newest frame, which covers the window's last hop: an event opens as soon as the
            sound is in the window, and onsets and offsets are placed at that newest hop). Needs an engine with
            ``infer_frames``. ``"max"``: the larger of the two per class (the frame head's speed at an onset, the
            clip head's recall on long sounds), time-stamped like ``"frames"``. ``"ola"``: an overlap-add of the
            frame head across windows: the hop ``ola_delay_s`` behind the newest audio, scored by the mean of every
            window's frame over it so far (steadier than the newest frame alone, ``ola_delay_s`` later); stamped at
            that hop. Clip scores (``clip_scores``,
            ``--tags``) always come from the clip head.
        early_windows: score a window every hop from the stream's start, the missing past filled with the
            stream's first frame, instead of waiting for one full window (a sound in the first second is heard
            one hop after it starts). ``clip_scores`` always uses full windows only.
        backdate_onsets: stamp an onset where the score first reached the release threshold on its way up
            (see :class:`realtime.events.EventTracker`); when it is emitted does not change.
        onset_refine: ``"energy"``: stamp an opening event's onset at the strongest rise in level of the raw frames
            within ``onset_lookback_s`` before the tracker's stamp (:class:`realtime.onsets.OnsetEnvelope`); when
            it is emitted does not change. ``"none"``: the tracker's stamp.
        onset_lookback_s: how far back ``"energy"`` looks, seconds.
        ola_delay_s: how far behind the newest audio ``onset_source="ola"`` tracks, seconds (whole hops, less than
            one window).
    """

    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    threshold: float = 0.5
    thresholds: Mapping[str, float] = field(default_factory=dict)
    release_ratio: float = 0.75
    min_duration_s: float = 0.0
    merge_gap_s: float = 0.0
    input_rate: int | None = None
    batch_size: int = 8
    onset_anchor: str = "newest"
    onset_source: str = "clip"
    early_windows: bool = False
    backdate_onsets: bool = False
    onset_refine: str = "none"
    onset_lookback_s: float = 1.0
    ola_delay_s: float = 0.2

    def __post_init__(self):
        """Every detector setting is checked here, once, whichever route it came by (model config, CLI, API)."""
        if not isinstance(self.frontend, FrontEndConfig) or not isinstance(self.window, WindowConfig):
            raise ConfigError("frontend and window must be FrontEndConfig and WindowConfig objects")
        self.detection        # the detection settings' own checks
        if self.input_rate is not None:
            try:
                check_rate(self.input_rate)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"input_rate: {e}") from e
        check_number("batch_size", self.batch_size, 1, MAX_BATCH, "windows", integer=True)

    @property
    def detection(self) -> DetectionSettings:
        """The detection settings alone, as a model config stores them."""
        return DetectionSettings(**{f.name: getattr(self, f.name) for f in fields(DetectionSettings)})

    @classmethod
    def from_model(cls, config: ModelConfig | Mapping[str, Any] | None) -> "DetectorConfig":
        """The model's own settings: front end, window and detection defaults (defaults throughout for None or an
        empty dict). Combine with the user's values by :meth:`override`; there is no other route."""
        if config is None or (isinstance(config, Mapping) and not config):
            return cls()
        mc = ModelConfig.from_dict(config)
        return cls(frontend=mc.frontend, window=mc.window, **asdict_shallow(mc.detection))

    def override(self, **values: Any) -> "DetectorConfig":
        """A copy with the given settings changed; ``None`` keeps the current value.

        Besides the fields, ``window_s`` and ``hop_s`` change the window (each alone too). Every value is checked
        (a ConfigError says what is accepted).
        """
        changes = {k: v for k, v in values.items() if v is not None}
        window_s, hop_s = changes.pop("window_s", None), changes.pop("hop_s", None)
        if window_s is not None or hop_s is not None:
            w = changes.get("window", self.window)
            changes["window"] = WindowConfig(window_s=w.window_s if window_s is None else window_s,
                                             hop_s=w.hop_s if hop_s is None else hop_s)
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"unknown detector settings {unknown}; accepted: {sorted(names | {'window_s', 'hop_s'})}")
        return replace(self, **changes)


def asdict_shallow(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values not copied (``dataclasses.asdict`` would deep-copy)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


@dataclass
class PendingWindow:
    """A window waiting for its scores (used to batch windows across streams)."""

    end_frame: int
    window: np.ndarray      # (T, F), normalised


class Detector:
    """Streaming audio event detector around an engine.

    Args:
        engine: anything with ``infer(x: float32 (B, T, F)) -> (B, C)`` and ``labels``; an optional
            ``config`` dict (the model's metadata) fills in a missing ``config``.
        config: detector settings; None takes them from ``engine.config``.
        on_window: optional callback ``(t_end_s, scores (C,))`` for every scored window.
        on_frames: optional callback ``(frames (n, F) raw log-mel)`` for every batch of new frames.
    """

    def __init__(self, engine: Any, config: DetectorConfig | None = None,
                 on_window: Callable[[float, np.ndarray], None] | None = None,
                 on_frames: Callable[[np.ndarray], None] | None = None):
        if not callable(getattr(engine, "infer", None)) or not hasattr(engine, "labels"):
            raise TypeError("engine must have infer(x: float32 (B, T, F)) -> (B, C) and labels")
        if config is None:
            config = DetectorConfig.from_model(getattr(engine, "config", None))
        self.engine = engine
        self.config = config
        self.labels = list(engine.labels)
        self.on_window = on_window
        self.on_frames = on_frames
        fe = config.frontend
        self.T, self.hop_frames = config.window.frames(fe)
        self._check_engine(engine, config)
        self._frames_mode = config.onset_source in ("frames", "max", "ola")
        self._ola = config.onset_source == "ola"
        if self._frames_mode and (not callable(getattr(engine, "infer_frames", None))
                                  or getattr(engine, "has_frames", True) is False):
            raise ConfigError(f"onset_source {config.onset_source!r} needs an engine with a frame head (infer_frames); "
                             f"{getattr(engine, 'name', type(engine).__name__)} has none: use onset_source 'clip'")
        # what digital silence looks like to the model: pads clips shorter than one window
        self._floor = silence_frame(fe)
        self.input_rate = check_rate(config.input_rate or fe.sample_rate)
        self.hop_s = self.hop_frames * fe.frame_shift_ms / 1000.0
        self._ola_hops = int(round(config.ola_delay_s / self.hop_s))
        self._ola_cols: dict[int, list[tuple[int, int]]] = {}   # see _ola_columns: fixed per window and model
        if self._ola and not (abs(self._ola_hops * self.hop_s - config.ola_delay_s) < 1e-6
                              and 0 <= self._ola_hops < self.T // self.hop_frames):
            raise ConfigError(f"ola_delay_s must be a whole number of hops ({self.hop_s:g} s) below one window "
                              f"({config.window.window_s:g} s), got {config.ola_delay_s}")
        self.window_s = self.T * fe.frame_shift_ms / 1000.0
        self.timer = StageTimer()
        self._resampler = StreamingResampler(self.input_rate, fe.sample_rate)
        self._fbank = StreamingFbank(fe)
        from realtime.windows import WindowScheduler

        self._windows = WindowScheduler(self.T, self.hop_frames, fe.num_mel_bins, early=config.early_windows)
        self.tracker = EventTracker(self.labels, threshold=config.threshold, thresholds=config.thresholds,
                                    release_ratio=config.release_ratio, min_duration_s=config.min_duration_s,
                                    merge_gap_s=config.merge_gap_s, hop_s=self.hop_s,
                                    backdate_onsets=config.backdate_onsets,
                                    onset_locator=self._locate_onset if config.onset_refine == "energy" else None)
        # onset strength of the frames: kept back to the look-back before the oldest window not yet scored
        self.onsets = OnsetEnvelope(keep=None)
        self._onset_keep = self.T + seconds_to_frames(config.onset_lookback_s, fe) + 2 * self.hop_frames
        self._newest_frame = 0
        self.reset()

    def _check_engine(self, engine: Any, config: DetectorConfig) -> None:
        """The settings against what this engine accepts (labels, mel bins, window length, batch)."""
        if not self.labels or not all(isinstance(lb, str) and lb for lb in self.labels):
            raise ConfigError(f"the engine's labels must be a non-empty list of non-empty strings, got {self.labels!r}")
        dup = sorted({lb for lb in self.labels if self.labels.count(lb) > 1})
        if dup:
            raise ConfigError(f"the model's labels must be unique; repeated: {dup}")
        unknown = sorted(set(config.thresholds) - set(self.labels))
        if unknown:
            raise ConfigError(f"per-class thresholds for labels the model does not have: {unknown}")
        fe = config.frontend
        spec = getattr(engine, "spec", None)
        if spec is None:
            return
        if spec.num_mel_bins != fe.num_mel_bins:
            raise ConfigError(f"front end gives {fe.num_mel_bins} mel bins but the engine accepts {spec.num_mel_bins}")
        if not (spec.t_min <= self.T <= spec.t_max):
            fps = fe.frames_per_second
            raise ConfigError(f"window of {config.window.window_s} s ({self.T} frames) is outside the model's "
                              f"range {spec.t_min / fps:.2f}..{spec.t_max / fps:.2f} s")
        if config.batch_size > spec.max_batch:
            raise ConfigError(f"batch_size {config.batch_size} is above the engine's limit of {spec.max_batch} "
                              f"windows per call; accepted: 1..{spec.max_batch}")

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all audio state (context, frames, open events, clock); keep the engine."""
        self._resampler.reset()
        self._fbank.reset()
        self._windows.reset()
        self.tracker.reset()
        self.onsets.reset()
        self._newest_frame = 0
        self._ola_sum: dict[int, np.ndarray] = {}    # hop slot (its end frame) -> sum of frame scores over it
        self._ola_n: dict[int, int] = {}
        self._time_offset_s = 0.0      # seconds skipped by gaps (dropped input) before the current segment
        self.samples_in = 0
        self.windows_scored = 0
        self._segment_windows = 0       # windows scored since the last reset or gap
        self._segment_samples = 0       # input samples received since the last reset or gap
        self.last_scores: np.ndarray | None = None
        self._clip_sum = np.zeros(len(self.labels), np.float64)   # clip-head scores of full windows, summed
        self._clip_n = 0

    def with_config(self, **changes) -> "Detector":
        """A new detector on the same engine with some settings changed (state starts fresh)."""
        return Detector(self.engine, self.config.override(**changes), self.on_window, self.on_frames)

    @property
    def time_s(self) -> float:
        """Stream time of the audio pushed so far, in seconds (gaps included)."""
        return self._time_offset_s + self._fbank.frames_emitted * self.config.frontend.frame_shift_ms / 1000.0

    def _frame_time(self, end_frame: int) -> float:
        return self._time_offset_s + end_frame * self.config.frontend.frame_shift_ms / 1000.0

    # -- streaming -----------------------------------------------------------------------------
    def feed(self, chunk: np.ndarray) -> list[PendingWindow]:
        """Front half of :meth:`push`: chunk -> windows ready for scoring (no inference)."""
        chunk = check_audio(chunk, self.input_rate, what="chunk")
        self.samples_in += chunk.shape[0]
        self._segment_samples += chunk.shape[0]
        with self.timer("resample"):
            x = self._resampler.push(chunk)
        return self._frames_to_windows(x)

    def _frames_to_windows(self, x: np.ndarray) -> list[PendingWindow]:
        with self.timer("features"):
            frames = self._fbank.push(x)
        if self.on_frames is not None and frames.shape[0]:
            self.on_frames(frames)
        if self.tracker.onset_locator is not None and frames.shape[0]:
            self.onsets.push(frames)
        with self.timer("windows"):
            wins = self._windows.push(normalize(frames, self.config.frontend)) if frames.shape[0] else []
        return [PendingWindow(end, w) for end, w in wins]

    def infer_batch(self, batch: np.ndarray, tag: np.ndarray | None = None) -> np.ndarray:
        """The scores the tracker follows for windows ``(B, T, F)``: ``(B, C)``.

        The clip head's scores, with ``onset_source="frames"`` the frame head's newest frame, with ``"max"`` the
        larger of the two; with ``"ola"`` the window's raw outputs ``(B, 1 + T', C)`` (clip, then frames), which
        :meth:`accept` turns into the tracker's scores. ``tag`` (B,) bool: windows whose clip-head scores count
        towards :meth:`stream_tags`.
        """
        if not self._frames_mode:
            clip = np.asarray(self.engine.infer(batch), dtype=np.float32)
            out = clip
        else:
            clip, frames = self.engine.infer_frames(batch)
            clip, frames = np.asarray(clip, dtype=np.float32), np.asarray(frames, dtype=np.float32)
            newest = frames[:, -1, :]                                    # (B, T', C) -> (B, C): the newest frame
            if self._ola:       # the tracker's scores need the stream's other windows: accept() adds them up
                out = np.concatenate([clip[:, None, :], frames], axis=1)  # (B, 1 + T', C)
            else:
                out = np.maximum(newest, clip) if self.config.onset_source == "max" else newest
        if tag is not None and clip.ndim == 2 and clip.shape[1] == self._clip_sum.shape[0] and tag.any():
            self._clip_sum += clip[tag].sum(axis=0, dtype=np.float64)
            self._clip_n += int(tag.sum())
        return out

    def stream_tags(self) -> np.ndarray | None:
        """Clip tags of everything processed since the last :meth:`reset`: the mean clip-head score of its full
        windows ``(C,)`` (a stream shorter than one window: its one padded window), None before any window.

        The same numbers as :meth:`clip_scores` on the same audio, in constant memory.
        """
        return None if self._clip_n == 0 else (self._clip_sum / self._clip_n).astype(np.float32)

    def score(self, windows: list[PendingWindow]) -> np.ndarray:
        """Run the engine on pending windows in batches: ``(n, C)``."""
        out = []
        bs = max(1, int(self.config.batch_size))
        with self.timer("inference"):
            for i in range(0, len(windows), bs):
                part = windows[i:i + bs]
                batch = np.stack([w.window for w in part])                    # (B, T, F)
                full = np.array([w.end_frame >= self.T for w in part])        # early windows are not clip tags
                out.append(self.infer_batch(batch, tag=full))
        if not out:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        scores = np.concatenate(out)
        if scores.shape[0] != len(windows) or scores.shape[-1] != len(self.labels):
            raise ValueError(f"engine returned scores of shape {scores.shape}, expected "
                             f"({len(windows)}, {len(self.labels)})")
        return scores

    def accept(self, windows: list[PendingWindow], scores: np.ndarray) -> list[Event]:
        """Back half of :meth:`push`: :meth:`score`'s scores -> events through the tracker."""
        return self._accept(windows, scores, raw=True)

    def accept_tracked(self, windows: list[PendingWindow], scores: np.ndarray) -> list[Event]:
        """:meth:`accept` for scores that are already the tracker's ``(n, C)`` (a recorded trace's)."""
        return self._accept(windows, scores, raw=False)

    def tracker_scores(self, window: PendingWindow, raw: np.ndarray) -> np.ndarray:
        """What the tracker follows for one window ``(C,)`` from :meth:`score`'s output for it; only
        ``onset_source="ola"`` keeps state (the overlap-add of the frame head over the stream's windows)."""
        if not self._ola:
            return raw
        frames = raw[1:]                                      # raw[0] is the clip head's (tags only)
        e, H = window.end_frame, self.hop_frames
        for back, k in self._ola_columns(frames.shape[0]):
            slot = e - back
            if slot in self._ola_sum:
                self._ola_sum[slot] += frames[k]
                self._ola_n[slot] += 1
            else:
                self._ola_sum[slot], self._ola_n[slot] = frames[k].astype(np.float64), 1
        for old in [k for k in self._ola_sum if k <= e - self.T]:
            del self._ola_sum[old], self._ola_n[old]
        target = e - self._ola_hops * H
        return (self._ola_sum[target] / self._ola_n[target]).astype(np.float32)

    def _ola_columns(self, K: int) -> list[tuple[int, int]]:
        """For the hops inside a window of ``K`` frame-head frames, newest first: (frames from the window's end to
        the hop's end, the frame over the hop's centre). It depends on the window and the model only, so it is
        computed once per ``K``."""
        cols = self._ola_cols.get(K)
        if cols is None:
            T, H = self.T, self.hop_frames
            j = np.arange(T // H)
            k = np.minimum(K - 1, ((T - H * (j + 0.5)) * K / T).astype(int))
            cols = self._ola_cols[K] = list(zip((H * j).tolist(), k.tolist()))
        return cols

    def _accept(self, windows: list[PendingWindow], scores: np.ndarray, raw: bool) -> list[Event]:
        events: list[Event] = []
        with self.timer("post"):
            for w, s in zip(windows, scores):
                if raw:
                    s = self.tracker_scores(w, s)
                self._newest_frame = w.end_frame
                t_end = self._frame_time(w.end_frame)
                t_centre = t_end - self.window_s / 2
                if self._ola:                # the tracked hop lies ola_delay_s behind the newest
                    t_on = t_off = t_end - (self._ola_hops + 1) * self.hop_s
                elif self._frames_mode:      # the newest frame scores the newest hop
                    t_on = t_off = t_end - self.hop_s
                else:
                    t_on = t_centre if self.config.onset_anchor == "centre" else t_end - self.hop_s
                    t_off = t_centre
                events += self._track(t_end, s, t_on, t_off)
            self.onsets.forget_before(self._newest_frame - self._onset_keep)
        return events

    def _locate_onset(self, t_start: float) -> float | None:
        """The strongest rise in level from ``onset_lookback_s`` before ``t_start`` up to the newest scored frame, as
        stream time; None where there is none (the tracker's stamp stays)."""
        fs = self.config.frontend.frame_shift_ms / 1000.0
        lo = int(np.floor((t_start - self._time_offset_s - self.config.onset_lookback_s) / fs))
        k = self.onsets.locate(lo, self._newest_frame)
        return None if k is None else self._time_offset_s + k * fs

    def _track(self, t_end: float, s: np.ndarray, t_on: float, t_off: float) -> list[Event]:
        """Feed one window's scores to the tracker and do the per-window bookkeeping."""
        events = self.tracker.update(t_on, s, t_offset=t_off)
        self.last_scores = s
        self.windows_scored += 1
        self._segment_windows += 1
        if self.on_window is not None:
            self.on_window(t_end, s)
        return events

    def push(self, chunk: np.ndarray) -> list[Event]:
        """Add a mono chunk at ``config.input_rate``; return the events it completes."""
        wins = self.feed(chunk)
        return self.accept(wins, self.score(wins)) if wins else []

    def gap(self, seconds: float) -> list[Event]:
        """Account for audio that never arrived (dropped input): close open events, keep the clock right."""
        if seconds <= 0:
            return []
        events = self.tracker.flush(self.time_s)
        # the clock restarts after every sample received, not after the last whole frame (a partial frame's
        # samples are real time that passed)
        self._time_offset_s += self._segment_samples / self.input_rate + seconds
        self._segment_samples = 0
        self._resampler.reset()
        self._fbank.reset()
        self._windows.reset()
        self.onsets.reset()
        self._newest_frame = 0
        self._ola_sum, self._ola_n = {}, {}
        self._segment_windows = 0
        return events

    def _pad(self, feats: np.ndarray) -> np.ndarray:
        """Frames ``(n, F)`` with ``n < T`` as one window ``(T, F)``: digital silence first, as if the stream had
        been silent before them, so the sound sits in the window's newest frames."""
        pad = np.repeat(self._floor[None, :], self.T - feats.shape[0], axis=0)
        return np.concatenate([pad, feats]).astype(np.float32)

    def flush(self) -> list[Event]:
        """End of stream: drain the resampler and close open events."""
        events: list[Event] = []
        if not self._resampler.passthrough:
            wins = self._frames_to_windows(self._resampler.flush())
            if wins:
                events += self.accept(wins, self.score(wins))
        tail = self._windows.buffered()
        if self._segment_windows == 0 and tail.shape[0] > 0:
            # a stream (or file) shorter than one window: score what there is, padded with silence, as one
            # window that spans the whole segment
            with self.timer("inference"):
                s = self.infer_batch(self._pad(tail)[None], tag=np.array([self._clip_n == 0]))[0]
            if self._ola:                    # one window: no other windows to add; its newest frame, as "max"
                s = np.maximum(s[0], s[-1])
            t_end = self._frame_time(self._windows.frames_seen)
            self._newest_frame = self._windows.frames_seen
            with self.timer("post"):
                events += self._track(t_end, s, self._time_offset_s, t_end)
        with self.timer("post"):
            events += self.tracker.flush(self.time_s)
        return events

    # -- offline -------------------------------------------------------------------------------
    def process(self, audio: np.ndarray) -> list[Event]:
        """Detect events in a whole signal; identical to pushing it in any chunks and flushing.

        The signal is pushed in pieces of about 64 hops (at least a second), so the windows in flight stay bounded
        whatever its length.
        """
        audio = check_audio(audio, self.input_rate, what="audio")
        self.reset()
        events: list[Event] = []
        step = self.chunk_samples
        for i in range(0, audio.shape[0], step):
            events += self.push(audio[i:i + step])
        events += self.flush()
        return events

    @property
    def chunk_samples(self) -> int:
        """Input samples per push that keep a backlog bounded: about 64 hops' worth, at least one second."""
        return int(self.input_rate * max(1.0, 64 * self.hop_s, self.config.batch_size * self.hop_s))

    def clip_scores(self, audio: np.ndarray) -> np.ndarray:
        """Tag a whole clip: the mean clip-head score of its full windows, ``(C,)``.

        A clip shorter than one window is padded with digital silence to one window and scored once. The same
        rule as :meth:`stream_tags` (it runs the streaming path on a scratch detector), in bounded memory.
        """
        audio = check_audio(audio, self.input_rate, what="audio")
        scratch = Detector(self.engine, replace(self.config, early_windows=False, onset_source="clip"))
        scratch.timer = self.timer
        scratch.process(audio)
        tags = scratch.stream_tags()
        if tags is None:
            fe = self.config.frontend
            need = fe.frame_length / fe.sample_rate
            raise AudioError(f"audio too short to tag: {audio.shape[0] / self.input_rate:.3f} s; accepted are "
                             f"clips of at least {need:.3f} s (one frame)")
        return tags
