"""What the profiler replays: injected-event sources (synthetic, file, microphone) and reference engines.

Example:
    >>> src = SyntheticSource(bursts=2, window_s=1.0, hop_s=0.1)
    >>> len(src.bursts), src.n_segments, round(src.segment_s, 2)
    (2, 2, 2.25)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

import numpy as np

from realtime.config import DetectionSettings, FrontEndConfig, ModelConfig
from realtime.sources import ArraySource
from apps.errors import UserError

__all__ = ["Burst", "LoudnessTrigger", "LoudnessReference", "SyntheticSource", "FileReplaySource", "MicSource",
           "burst_track", "read_events_tsv"]


@dataclass(frozen=True)
class Burst:
    """An injected event: its first sample in stream time (seconds at the source rate) and its label."""

    onset_s: float
    label: str | None = None


# -- engines -----------------------------------------------------------------------------------------------------


def _loudness_scores(x: np.ndarray, level: float) -> np.ndarray:
    loud = x.max(axis=(1, 2))                                   # loudest mel bin of the loudest frame: (B,)
    return (1.0 / (1.0 + np.exp(-10.0 * (loud - level)))).astype(np.float32)[:, None]


class LoudnessTrigger:
    """Runs the real engine on every window (its cost is measured) but decides onsets by loudness.

    A model with random weights, or one that does not know the injected sound, detects nothing; this
    keeps the pipeline's timing real while the onset decision is a model-free reference.
    """

    labels = ["burst"]

    def __init__(self, engine: Any, level: float = 0.5):
        self.engine = engine
        self.level = level
        base = ModelConfig.from_dict(getattr(engine, "config", None) or {"labels": self.labels})
        # the wrapped model's front end and window, with this trigger's one label and plain detection settings
        self.config = replace(base, labels=tuple(self.labels), detection=DetectionSettings())
        self.spec = getattr(engine, "spec", None)
        self.name = f"{getattr(engine, 'name', type(engine).__name__)}+loudness-trigger"

    def infer(self, x: np.ndarray) -> np.ndarray:
        self.engine.infer(x)
        return _loudness_scores(x, self.level)

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


class LoudnessReference:
    """A model-free engine (class ``burst`` when any frame is loud): isolates the pipeline's own latency.

    Args:
        num_mel_bins: mel bins of the default front end (when ``frontend`` is None).
        level: normalised log-mel level that counts as loud.
        frontend: the front end to share with a real engine (``engine.config.frontend``, or its dict form).
    """

    labels = ["burst"]
    name = "loudness (reference, no model)"

    def __init__(self, num_mel_bins: int = 64, level: float = 0.5,
                 frontend: FrontEndConfig | Mapping[str, Any] | None = None):
        self.level = level
        if frontend is None:
            frontend = FrontEndConfig(num_mel_bins=num_mel_bins)
        elif not isinstance(frontend, FrontEndConfig):
            frontend = FrontEndConfig.from_dict(dict(frontend))
        self.config = ModelConfig(labels=tuple(self.labels), frontend=frontend)

    def infer(self, x: np.ndarray) -> np.ndarray:
        return _loudness_scores(x, self.level)

    def close(self) -> None:
        pass


# -- sources -----------------------------------------------------------------------------------------------------


def burst_track(rate: int, bursts: int, window_s: float, hop_s: float, burst_s: float = 0.25, amp: float = 0.5,
                freq: float = 1000.0, noise: float = 1e-3, seed: int = 0,
                duration_s: float | None = None) -> tuple[np.ndarray, list[Burst], float]:
    """A signal with one tone burst per segment at a jittered offset, and the segment length.

    Each segment is ``lead + jitter + burst + tail`` with ``lead = window + 0.3 s`` (the first window must
    be complete), ``jitter`` uniform over one hop (so the hop wait is sampled fairly) and a tail long
    enough for the event to close before the next burst enters a window.
    """
    lead = window_s + 0.3
    period = lead + burst_s + 3 * hop_s + 0.4
    if duration_s is not None:
        if duration_s < period:
            raise UserError(f"duration {duration_s} s is shorter than one burst segment ({period:.2f} s for a "
                             f"{window_s} s window)")
        bursts = max(1, int(duration_s // period)) if bursts <= 0 else bursts
        if bursts * period > duration_s + 1e-9:
            raise UserError(f"{bursts} bursts need at least {bursts * period:.1f} s at a {window_s} s window "
                             f"({period:.2f} s each); got --duration {duration_s}")
        period = duration_s / bursts
    rng = np.random.default_rng(seed)
    n_seg = int(round(period * rate))
    x = (noise * rng.standard_normal(n_seg * bursts)).astype(np.float32)
    out = []
    n_b = int(round(burst_s * rate))
    t = np.arange(n_b) / rate
    tone = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    for k in range(bursts):
        i0 = k * n_seg + int(round((lead + rng.uniform(0.0, hop_s)) * rate))
        x[i0:i0 + n_b] += tone
        out.append(Burst(i0 / rate, "burst"))
    return x, out, n_seg / rate


def read_events_tsv(path: str) -> list[Burst]:
    """Ground-truth onsets from a TSV: DCASE ``filename onset offset event_label`` or ``onset offset label``."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or parts[0] in ("filename", "onset"):
                continue
            vals = parts[1:] if len(parts) >= 4 else parts
            try:
                onset = float(vals[0])
            except (ValueError, IndexError):
                raise UserError(f"{path}:{n}: expected 'onset<TAB>offset<TAB>label' (optionally after a filename "
                                 f"column), got {line.strip()!r}") from None
            rows.append(Burst(onset, vals[2] if len(vals) > 2 else None))
    return sorted(rows, key=lambda b: b.onset_s)


class _PacedSource:
    """Audio replayed at real-time pace, in segments; a block is delivered when its last sample is due."""

    live = False

    def __init__(self, audio: np.ndarray, rate: int, bursts: list[Burst], segment_s: float, block_s: float = 0.02):
        self.audio, self.rate, self.bursts = audio, int(rate), bursts
        self.segment_s = segment_s
        self.block_s = block_s
        self.seg_len = max(1, int(round(segment_s * rate)))

    @property
    def n_segments(self) -> int:
        return max(1, math.ceil(self.audio.shape[0] / self.seg_len))

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.rate

    def segment(self, k: int) -> tuple[int, np.ndarray]:
        lo = k * self.seg_len
        return lo, self.audio[lo:lo + self.seg_len]

    def blocks(self, k: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first sample index in the stream, block)`` for segment ``k`` (via :class:`ArraySource`)."""
        lo, seg = self.segment(k)
        pos = lo
        for b in ArraySource(seg, self.rate, block_s=self.block_s).blocks():
            yield pos, b
            pos += b.shape[0]


class SyntheticSource(_PacedSource):
    """Scheduled tone bursts, no audio hardware (``--source synthetic``)."""

    name = "synthetic"

    def __init__(self, bursts: int = 10, window_s: float = 1.0, hop_s: float = 0.1, rate: int = 16000,
                 duration_s: float | None = None, block_s: float = 0.02, seed: int = 0):
        audio, marks, seg = burst_track(rate, bursts, window_s, hop_s, seed=seed, duration_s=duration_s)
        super().__init__(audio, rate, marks, seg, block_s)


class FileReplaySource(_PacedSource):
    """A file replayed at real-time pace, with optional ground-truth onsets (``--source FILE --events TSV``)."""

    def __init__(self, path: str, events: list[Burst] | None = None, segment_s: float = 5.0, block_s: float = 0.02):
        from realtime.sources import read_audio

        audio, rate = read_audio(path)
        self.name = str(path)
        super().__init__(audio, rate, list(events or []), segment_s, block_s)


class MicSource:
    """Bursts played to the default output and captured from a microphone (or PulseAudio's virtual one).

    Each slot plays one burst segment; where the burst landed in the captured stream is found from the
    waveform (first sample above ``detect_level`` after silence).
    """

    name = "mic"
    live = True

    def __init__(self, slots: int, window_s: float, hop_s: float, device: Any = None, output_device: Any = None,
                 samplerate: int | None = None, block_s: float = 0.02, detect_level: float = 0.1, seed: int = 0):
        self.track, marks, self.segment_s = burst_track(48000, 1, window_s, hop_s, seed=seed)
        self.track_rate = 48000
        self.slots = slots
        self.device, self.output_device, self.samplerate, self.block_s = device, output_device, samplerate, block_s
        self.detect_level = detect_level
        self.capture = None
        self.rate: int | None = None

    @property
    def n_segments(self) -> int:
        return self.slots

    def start(self) -> None:
        from realtime.capture import MicrophoneCapture

        self.capture = MicrophoneCapture(device=self.device, samplerate=self.samplerate, block_s=self.block_s).start()
        self.rate = self.capture.samplerate
        self.blocksize = max(1, int(self.block_s * self.rate))
        self.read_total = 0
        t_end = time.perf_counter() + 10.0
        while time.perf_counter() < t_end:                    # wait until the device delivers audio
            first = self.capture.read(timeout=0.5)
            if first.shape[0]:
                self.read_total += first.shape[0]
                break

    def stop(self) -> None:
        if self.capture is not None:
            self.capture.stop()

    def due(self, g: int) -> float:
        """Wall time at which captured sample ``g`` (global index) came in: its block's callback time."""
        times = self.capture.callback_times
        i = min(g // self.blocksize, len(times) - 1)
        return times[i] - (self.blocksize - g % self.blocksize) / self.rate if i >= 0 else float("nan")
