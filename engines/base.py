"""The Engine protocol shared by every backend."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["InputSpec", "Engine", "EngineBase"]


@dataclass(frozen=True)
class InputSpec:
    """What an engine accepts: ``(B, T, F)`` float32 with ``t_min <= T <= t_max`` and ``B <= max_batch``."""

    num_mel_bins: int
    t_min: int
    t_max: int
    max_batch: int = 64

    def check(self, x: np.ndarray) -> np.ndarray:
        """Validate a batch of windows and return it as C-contiguous float32."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"expected a numpy float32 array (B, T, {self.num_mel_bins}), got {type(x).__name__}")
        if x.ndim != 3 or x.shape[2] != self.num_mel_bins:
            raise ValueError(
                f"expected shape (B, T, {self.num_mel_bins}) with {self.t_min} <= T <= {self.t_max}, got {x.shape}")
        b, t, _ = x.shape
        if not (self.t_min <= t <= self.t_max):
            raise ValueError(f"window length T={t} frames is outside the accepted range [{self.t_min}, {self.t_max}]")
        if not (1 <= b <= self.max_batch):
            raise ValueError(f"batch size {b} is outside the accepted range [1, {self.max_batch}]")
        return np.ascontiguousarray(x, dtype=np.float32)


@runtime_checkable
class Engine(Protocol):
    name: str
    spec: InputSpec
    labels: list[str]
    config: dict[str, Any]

    def infer(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class EngineBase:
    """Shared plumbing: context manager and ``closed`` state."""

    name = "base"

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.labels: list[str] = list(config.get("labels", []))
        inp = config.get("input", {})
        fe = config.get("frontend", {})
        self.spec = InputSpec(
            num_mel_bins=int(inp.get("num_mel_bins", fe.get("num_mel_bins", 128))),
            t_min=int(inp.get("t_min", 1)),
            t_max=int(inp.get("t_max", 100000)),
            max_batch=int(inp.get("max_batch", 64)),
        )
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name} engine is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
