"""Where a sound started: an onset-strength envelope over the raw log-mel frames, for stamping event onsets.

A window classifier knows *that* a sound is in its window some time after the sound began; the energy in the
frames knows *when* it began. When the tracker opens an event, :meth:`OnsetEnvelope.locate` looks back over the
last ``lookback`` seconds for the strongest rise in level and the event's onset is stamped there. When the
event is emitted does not change (that is the model's latency); only its time stamp moves.

The envelope is the half-wave rectified log-mel difference over ``lag`` frames, averaged over the mel bands
(spectral flux on a log scale, in the spirit of Böck & Widmer, "Maximum filter vibrato suppression for onset
detection", DAFx 2013, without the maximum filter). It is computed once per new frame, in O(F).

Example:
    >>> env = OnsetEnvelope(lag=2)
    >>> quiet, loud = np.full((50, 8), -10.0), np.full((30, 8), -2.0)
    >>> _ = env.push(np.concatenate([quiet, loud]))
    >>> env.locate(0, 80)        # the first loud frame
    50
"""
from __future__ import annotations

import numpy as np

__all__ = ["OnsetEnvelope", "ONSET_REFINES"]

#: How an event's onset is stamped: as the tracker placed it, or at the strongest rise in level before it.
ONSET_REFINES = ("none", "energy")


class OnsetEnvelope:
    """Onset strength per frame of a stream, the newest ``keep`` frames of it.

    Args:
        lag: frames between the two compared (3 at a 10 ms hop: a 30 ms rise).
        keep: frames of history kept by :meth:`push` (None: all until :meth:`forget_before`).
        min_strength: a rise smaller than this (natural-log units, averaged over the bands: 0.8 is about 3.5 dB
            across the spectrum in 30 ms) is not an onset;
            :meth:`locate` then returns None and the tracker's own stamp stays.
    """

    def __init__(self, lag: int = 3, keep: int | None = 1000, min_strength: float = 0.8) -> None:
        if lag < 1 or (keep is not None and keep < 1):
            raise ValueError(f"lag and keep must be >= 1 frame, got {lag} and {keep}")
        self.lag = int(lag)
        self.keep = None if keep is None else int(keep)
        self.min_strength = float(min_strength)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new stream or a gap)."""
        self._tail: np.ndarray | None = None    # the last ``lag`` raw frames
        self._values = np.zeros(0, np.float32)
        self._base = 0                           # absolute frame index of ``_values[0]``

    @property
    def frames_seen(self) -> int:
        return self._base + len(self._values)

    def push(self, frames: np.ndarray) -> np.ndarray:
        """Add raw log-mel frames ``(n, F)``; return their onset strengths ``(n,)``."""
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2:
            raise ValueError(f"frames must be (n, mel bins), got shape {frames.shape}")
        if frames.shape[0] == 0:
            return np.zeros(0, np.float32)
        head = frames[:1].repeat(self.lag, axis=0) if self._tail is None else self._tail
        ext = np.concatenate([head, frames])
        new = np.maximum(ext[self.lag:] - ext[:-self.lag], 0.0).mean(axis=1).astype(np.float32)
        self._tail = ext[-self.lag:]
        self._values = np.concatenate([self._values, new])
        if self.keep is not None and len(self._values) > self.keep:
            self.forget_before(self.frames_seen - self.keep)
        return new

    def forget_before(self, frame: int) -> None:
        """Drop the strengths of frames before ``frame`` (absolute index)."""
        cut = min(max(0, int(frame) - self._base), len(self._values))
        if cut:
            self._values = self._values[cut:]
            self._base += cut

    def load(self, values: np.ndarray) -> None:
        """Replace the history with a whole stream's strengths (replaying a recorded trace)."""
        self.reset()
        self._values = np.asarray(values, np.float32).copy()

    def values(self) -> np.ndarray:
        """The strengths kept, oldest first (a copy)."""
        return self._values.copy()

    def locate(self, lo: int, hi: int) -> int | None:
        """The frame in ``[lo, hi)`` (absolute indices) with the strongest rise; None where the range holds no
        kept frame or no rise of at least ``min_strength``."""
        a, b = max(int(lo), self._base), min(int(hi), self.frames_seen)
        if b <= a:
            return None
        seg = self._values[a - self._base:b - self._base]
        k = int(np.argmax(seg))
        return a + k if seg[k] >= self.min_strength else None
