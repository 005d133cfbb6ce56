"""Single-producer single-consumer float32 ring buffer for captured audio, gaps kept in stream order.

The producer (an audio callback) only copies; when the consumer falls behind, the block that
does not fit is dropped, counted and remembered as a gap on the producer's timeline. The
producer can also mark audio that never reached it (a discontinuity of the device's clock) with
:meth:`RingBuffer.mark_gap`. Gaps sit in the stream where they happened: :meth:`RingBuffer.read`
stops at the next gap, and :meth:`RingBuffer.take_gaps` hands out the gaps the reader has
reached, so a consumer sees audio and gaps in stream order. Consecutive drops (one stall of the
consumer) merge into one gap. Nothing is overwritten under the reader's feet.

Example:
    >>> import numpy as np
    >>> rb = RingBuffer(capacity=8, channels=1)
    >>> rb.write(np.ones((6, 1), np.float32))
    6
    >>> rb.write(np.ones((6, 1), np.float32))   # only 2 fit: 4 samples dropped
    2
    >>> rb.overruns, rb.dropped_samples
    (1, 4)
    >>> rb.take_gaps()                          # not reached yet: 8 frames come before it
    []
    >>> rb.read().shape, rb.take_gaps()
    ((8, 1), [Gap(start=8, length=4, kind='overrun')])
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["RingBuffer", "Gap"]


@dataclass(frozen=True)
class Gap:
    """Samples the consumer never saw: ``length`` frames starting at producer frame ``start``.

    ``kind`` is ``"overrun"`` (dropped here because the consumer was behind) or ``"discontinuity"``
    (never delivered by the device: the stream's clock jumped).
    """

    start: int
    length: int
    kind: str = "overrun"


class RingBuffer:
    """Bounded FIFO of ``(frames, channels)`` float32 audio with counted overruns and in-order gaps.

    Args:
        capacity: frames the buffer holds.
        channels: interleaved channels per frame (the consumer downmixes).
    """

    def __init__(self, capacity: int, channels: int = 1):
        if capacity <= 0 or channels <= 0:
            raise ValueError(f"capacity and channels must be positive, got {capacity}, {channels}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._buf = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._lock = threading.Lock()
        self._data_ready = threading.Condition(self._lock)
        self._read_pos = 0      # stored frames consumed
        self._write_pos = 0     # frames stored
        self._produced = 0      # position on the producer's timeline: frames offered + frames marked lost
        self._gaps: deque[tuple[int, Gap]] = deque()   # (stored-frame position, gap), not yet taken, in order
        self.overruns = 0           # blocks that did not (entirely) fit
        self.dropped_samples = 0    # frames dropped because the consumer was behind
        self.lost_frames = 0        # frames marked lost by the producer (discontinuities)
        self.gaps_total = 0         # gaps recorded (a run of consecutive drops counts once)
        self._closed = False
        self._error: BaseException | None = None

    # -- producer side -------------------------------------------------------------------------
    def _add_gap(self, length: int, kind: str) -> None:
        # called with the lock held; merges with the previous gap when no audio came between them
        if self._gaps:
            at, last = self._gaps[-1]
            if at == self._write_pos and last.kind == kind and last.start + last.length == self._produced:
                self._gaps[-1] = (at, Gap(last.start, last.length + length, kind))
                return
        self._gaps.append((self._write_pos, Gap(self._produced, length, kind)))
        self.gaps_total += 1

    def write(self, block: np.ndarray) -> int:
        """Copy a ``(frames, channels)`` block in; return how many frames were stored."""
        n = block.shape[0]
        with self._lock:
            free = self.capacity - (self._write_pos - self._read_pos)
            take = min(n, free)
            if take:
                start = self._write_pos % self.capacity
                first = min(take, self.capacity - start)
                self._buf[start:start + first] = block[:first]
                if take > first:
                    self._buf[:take - first] = block[first:take]
                self._write_pos += take
                self._produced += take
            if take < n:
                self.overruns += 1
                self.dropped_samples += n - take
                self._add_gap(n - take, "overrun")
                self._produced += n - take
            self._data_ready.notify_all()
        return take

    def mark_gap(self, frames: int, kind: str = "discontinuity") -> None:
        """Record ``frames`` of audio that never arrived, at the current end of the stream."""
        frames = int(frames)
        if frames <= 0:
            return
        with self._lock:
            self.lost_frames += frames
            self._add_gap(frames, kind)
            self._produced += frames
            self._data_ready.notify_all()

    def close(self, error: BaseException | None = None) -> None:
        """Mark the end of the stream; a pending or later read returns what is left, then raises ``error``."""
        with self._lock:
            self._closed = True
            self._error = error
            self._data_ready.notify_all()

    # -- consumer side -------------------------------------------------------------------------
    @property
    def available(self) -> int:
        with self._lock:
            return self._write_pos - self._read_pos

    @property
    def closed(self) -> bool:
        return self._closed

    def _readable(self) -> int:
        # frames the reader may take now: up to the next gap (lock held)
        end = self._write_pos if not self._gaps else min(self._write_pos, self._gaps[0][0])
        return end - self._read_pos

    def _gap_reached(self) -> bool:
        return bool(self._gaps) and self._gaps[0][0] <= self._read_pos

    @property
    def gap_due(self) -> bool:
        """True when the reader stands at a gap: :meth:`take_gaps` has something to hand out."""
        with self._lock:
            return self._gap_reached()

    def read(self, max_frames: int | None = None, timeout: float | None = 0.0) -> np.ndarray:
        """Take up to ``max_frames`` frames (all available when None), never past the next gap.

        Waits up to ``timeout`` seconds for data (None waits until data arrives or the buffer is
        closed); does not wait when a gap is due (collect it with :meth:`take_gaps`). Returns an
        empty ``(0, channels)`` array when nothing can be read. Once the buffer is closed and
        drained, raises the producer's error if one was given, else returns empty arrays.
        """
        with self._lock:
            if (self._write_pos == self._read_pos and not self._closed and timeout != 0.0
                    and not self._gap_reached()):
                self._data_ready.wait_for(lambda: self._write_pos > self._read_pos or self._closed
                                          or self._gap_reached(), timeout)
            n = self._readable()
            if n == 0:
                if (self._closed and self._error is not None and self._write_pos == self._read_pos
                        and not self._gap_reached()):
                    raise self._error
                return np.zeros((0, self.channels), dtype=np.float32)
            if max_frames is not None:
                n = min(n, int(max_frames))
            start = self._read_pos % self.capacity
            first = min(n, self.capacity - start)
            out = np.empty((n, self.channels), dtype=np.float32)
            out[:first] = self._buf[start:start + first]
            if n > first:
                out[first:] = self._buf[:n - first]
            self._read_pos += n
            return out

    def take_gaps(self) -> list[Gap]:
        """Gaps the reader has reached (they follow the audio read so far), oldest first."""
        out = []
        with self._lock:
            while self._gaps and self._gaps[0][0] <= self._read_pos:
                out.append(self._gaps.popleft()[1])
        return out

    def pending_gaps(self) -> list[Gap]:
        """Every gap not yet taken, reached or not (a look, nothing is consumed)."""
        with self._lock:
            return [g for _, g in self._gaps]

    def missed(self) -> int:
        """Total frames dropped so far because the consumer was behind."""
        return self.dropped_samples
