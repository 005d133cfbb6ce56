"""Input checks at the public entry points, in the user's units."""
from __future__ import annotations

import numpy as np

from realtime.errors import AudioError

__all__ = ["check_audio"]


def check_audio(x, rate: int, what: str = "audio") -> np.ndarray:
    """Return ``x`` as a 1-D float32 array, or raise naming what is accepted.

    Accepted: a non-empty 1-D NumPy array of float32 or float64 samples in [-1, 1], finite, at
    ``rate`` Hz (mono).
    """
    accepted = f"expected a non-empty 1-D float32 NumPy array of mono samples at {rate} Hz"
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{accepted}, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        hint = " (divide integer PCM by its full scale, e.g. int16 / 32768)" if np.issubdtype(x.dtype, np.integer) \
            else ""
        raise TypeError(f"{accepted}, got dtype {x.dtype}{hint}")
    if x.ndim == 2 and 1 < min(x.shape) <= 64:
        raise AudioError(f"{accepted}, got {min(x.shape)} channels (shape {x.shape}); average the channels to mono")
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise AudioError(f"{accepted}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise AudioError(f"{accepted}, got an empty {what}")
    x = np.ascontiguousarray(x, dtype=np.float32)       # checked after the cast: 1e300 in float64 is Inf here
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(f"{accepted}, got {bad} NaN or Inf samples in the {what} (as float32)")
    return x
