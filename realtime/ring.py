"""Single-producer single-consumer float32 ring buffer for captured audio.

The producer (an audio callback) only copies; when the consumer falls behind, the block that
does not fit is dropped, counted and remembered as a gap on the producer's timeline, so that a
reader can ask exactly what it missed. Nothing is overwritten under the reader's feet.

Example:
    >>> import numpy as np
    >>> rb = RingBuffer(capacity=8, channels=1)
    >>> rb.write(np.ones((6, 1), np.float32))
    6
    >>> rb.write(np.ones((6, 1), np.float32))   # only 2 fit: 4 samples dropped
    2
    >>> rb.overruns, rb.dropped_samples
    (1, 4)
    >>> rb.read().shape
    (8, 1)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = ["RingBuffer", "Gap"]


@dataclass(frozen=True)
class Gap:
    """Samples the consumer never saw: ``length`` frames starting at producer frame ``start``."""

    start: int
    length: int


class RingBuffer:
    """Bounded FIFO of ``(frames, channels)`` float32 audio with counted overruns.

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
        self._read_pos = 0      # frames consumed, on the producer's timeline minus dropped frames
        self._write_pos = 0     # frames stored
        self._produced = 0      # frames offered by the producer, dropped ones included
        self._gaps: list[Gap] = []
        self.overruns = 0
        self.dropped_samples = 0
        self._closed = False
        self._error: BaseException | None = None

    # -- producer side -------------------------------------------------------------------------
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
            if take < n:
                self.overruns += 1
                self.dropped_samples += n - take
                self._gaps.append(Gap(self._produced + take, n - take))
            self._produced += n
            self._data_ready.notify_all()
        return take

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

    def read(self, max_frames: int | None = None, timeout: float | None = 0.0) -> np.ndarray:
        """Take up to ``max_frames`` frames (all available when None).

        Waits up to ``timeout`` seconds for data (None waits until data arrives or the buffer is
        closed). Returns an empty ``(0, channels)`` array when nothing arrived in time. Once the
        buffer is closed and drained, raises the producer's error if one was given, else returns
        empty arrays.
        """
        with self._lock:
            if self._write_pos == self._read_pos and not self._closed and timeout != 0.0:
                self._data_ready.wait_for(lambda: self._write_pos > self._read_pos or self._closed, timeout)
            avail = self._write_pos - self._read_pos
            if avail == 0:
                if self._closed and self._error is not None:
                    raise self._error
                return np.zeros((0, self.channels), dtype=np.float32)
            n = avail if max_frames is None else min(avail, int(max_frames))
            start = self._read_pos % self.capacity
            first = min(n, self.capacity - start)
            out = np.empty((n, self.channels), dtype=np.float32)
            out[:first] = self._buf[start:start + first]
            if n > first:
                out[first:] = self._buf[:n - first]
            self._read_pos += n
            return out

    def take_gaps(self) -> list[Gap]:
        """Gaps (dropped runs) since the last call, oldest first."""
        with self._lock:
            gaps, self._gaps = self._gaps, []
            return gaps

    def missed(self) -> int:
        """Total frames dropped so far because the consumer was behind."""
        return self.dropped_samples
