"""Sliding windows of log-mel frames: a ``(T, F)`` window every hop.

Example:
    >>> import numpy as np
    >>> ws = WindowScheduler(window_frames=4, hop_frames=2, num_mel_bins=3)
    >>> [end for end, _ in ws.push(np.zeros((7, 3), np.float32))]
    [4, 6]
"""
from __future__ import annotations

import numpy as np

__all__ = ["WindowScheduler", "clip_window_ends"]


def clip_window_ends(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """The windows a whole clip is tagged by, as end frames: the rule shared by :meth:`Detector.clip_scores
    <realtime.detector.Detector.clip_scores>` and the trainer's validation.

    Every full window the streaming scheduler emits: the first ends at ``window_frames``, then one every hop, while
    it fits. A clip shorter than one window gives one window ending at its last frame (padded before its start with
    digital silence to ``window_frames``). No frames, no windows.

    Example:
        >>> clip_window_ends(250, 100, 50), clip_window_ends(60, 100, 50)
        ([100, 150, 200, 250], [60])
    """
    if num_frames <= 0:
        return []
    if num_frames < window_frames:
        return [num_frames]
    return list(range(window_frames, num_frames + 1, hop_frames))


class WindowScheduler:
    """Collect frames and emit ``(end_frame, window)`` pairs, ``window`` of shape ``(T, F)``.

    The first window ends at frame ``T``; each following one ``hop`` frames later. ``end_frame``
    counts frames since the last reset, so ``end_frame * frame_shift`` is the window's end time.

    With ``early=True`` the windows start early: one ends at every hop before ``T`` too, its missing past filled
    with the stream's first frame (as if the sound at the start had lasted, so a stream that starts in noise
    does not look like a sudden onset of noise). A detector then hears a sound at the very start of a stream one
    hop after it, not one window after.
    """

    def __init__(self, window_frames: int, hop_frames: int, num_mel_bins: int, early: bool = False):
        if window_frames <= 0 or hop_frames <= 0:
            raise ValueError(f"window and hop must be positive frame counts, got {window_frames}, {hop_frames}")
        self.T = int(window_frames)
        self.hop = int(hop_frames)
        self.F = int(num_mel_bins)
        self.early = bool(early)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros((0, self.F), dtype=np.float32)
        self._buf_start = 0              # frame index of _buf[0]
        # frame index at which the next window ends
        self._next_end = min(self.T, self.hop) if self.early else self.T

    def buffered(self) -> np.ndarray:
        """The frames held for future windows ``(n, F)`` (all frames so far, before the first window)."""
        return self._buf

    @property
    def frames_seen(self) -> int:
        return self._buf_start + self._buf.shape[0]

    def push(self, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if frames.shape[0]:
            self._buf = np.concatenate([self._buf, frames]) if self._buf.shape[0] else np.asarray(frames)
        out: list[tuple[int, np.ndarray]] = []
        while self._next_end <= self.frames_seen:
            lo = self._next_end - self.T - self._buf_start
            if lo < 0:   # an early window: the stream's missing past is its first frame, repeated
                win = np.concatenate([np.repeat(self._buf[:1], -lo, axis=0), self._buf[:self._next_end - self._buf_start]])
            else:
                win = self._buf[lo:lo + self.T].copy()
            out.append((self._next_end, win))
            self._next_end += self.hop
        # keep only frames a future window can still use
        keep_from = self._next_end - self.T - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return out
