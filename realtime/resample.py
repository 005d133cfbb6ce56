"""Streaming resampling from a device's rate to the model's rate (python-soxr).

soxr's ``ResampleStream`` keeps its filter state between chunks, so the output does not depend
on how the input is cut; it is the well-kept choice (libsoxr, 'HQ' quality by default).

Example:
    >>> import numpy as np
    >>> rs = StreamingResampler(48000, 16000)
    >>> y = rs.push(np.zeros(4800, np.float32)); y = np.concatenate([y, rs.flush()])
    >>> y.shape
    (1600,)
"""
from __future__ import annotations

import numpy as np
from realtime.errors import ConfigError

__all__ = ["StreamingResampler", "MIN_RATE", "MAX_RATE", "check_rate"]

MIN_RATE = 4000
MAX_RATE = 384000


def check_rate(rate: float) -> int:
    """Return ``rate`` as an int or raise ``ValueError`` naming the accepted range."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"sample rate must be a number of Hz between {MIN_RATE} and {MAX_RATE}, got {rate!r}")
    if not np.isfinite(rate) or not (MIN_RATE <= rate <= MAX_RATE) or int(rate) != rate:
        raise ConfigError(f"unsupported sample rate {rate!r} Hz: accepted are whole rates from {MIN_RATE} "
                         f"to {MAX_RATE} Hz (resampled to the model's rate)")
    return int(rate)


class StreamingResampler:
    """Resample mono float32 chunks from ``in_rate`` to ``out_rate``; a pass-through when equal.

    Args:
        in_rate: input rate in Hz (4 kHz to 384 kHz).
        out_rate: output rate in Hz.
        quality: soxr quality string ('HQ' or 'VHQ').
    """

    def __init__(self, in_rate: int, out_rate: int = 16000, quality: str = "HQ"):
        self.in_rate = check_rate(in_rate)
        self.out_rate = check_rate(out_rate)
        self.quality = quality
        self._stream = None
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def reset(self) -> None:
        if self.passthrough:
            self._stream = None
            return
        import soxr  # lazy: an edge install has it, but `import realtime` must stay numpy-only

        self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality)

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """Drain the filter's tail at the end of a stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
