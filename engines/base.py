"""The Engine protocol shared by every backend, and the model-file plumbing they all use.

Nothing here imports torch, onnxruntime or tensorrt: backends live in their own modules and are
imported only when asked for (see :func:`engines.create_engine`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from realtime.config import InputRange, ModelConfig, check_number
from realtime.errors import AedError, ConfigError, EngineError, ModelFileError  # noqa: F401 - re-exported

__all__ = [
    "InputSpec", "Engine", "EngineBase", "MissingDependencyError", "ModelFileError", "ModelFiles",
    "resolve_model_path", "read_config_json", "missing_dependency", "EXTRAS",
]

log = logging.getLogger(__name__)

#: Which ``pip install 'aed[EXTRA]'`` provides each optional module.
EXTRAS: dict[str, str] = {
    "onnxruntime": "the base install (pip install aed) or pip install onnxruntime",
    "torch": "pip install 'aed[torch]'",
    "safetensors": "pip install 'aed[torch]'",
    "onnx": "pip install 'aed[torch]'",
    "tensorrt": "pip install 'aed[tensorrt]'",
    "tritonclient": "pip install 'aed[triton]'",
    "pytriton": "pip install 'aed[serve]'",
    "cuda": "pip install 'aed[tensorrt]'",
}


class MissingDependencyError(AedError, ImportError):
    """An optional dependency needed by the requested engine is not installed.

    The message names the extra to install; there is never a silent fallback to another backend.
    """


def missing_dependency(module: str, purpose: str, cause: BaseException | None = None) -> MissingDependencyError:
    """Build the documented error for a missing optional module.

    Args:
        module: top-level module name that failed to import (``"onnxruntime"``, ``"tensorrt"``...).
        purpose: what needed it, e.g. ``"the onnxruntime engine"``.
        cause: the original ImportError, kept in the message for diagnosis.
    """
    how = EXTRAS.get(module, f"pip install {module}")
    msg = f"{purpose} needs the '{module}' package, which is not installed; install it with: {how}"
    if cause is not None and str(cause):
        msg += f" ({cause})"
    return MissingDependencyError(msg)


@dataclass(frozen=True)
class InputSpec:
    """What an engine accepts: ``(B, T, F)`` float32 with ``t_min <= T <= t_max`` and ``B <= max_batch``."""

    num_mel_bins: int
    t_min: int
    t_max: int
    max_batch: int = 64

    def __post_init__(self) -> None:
        check_number("input num_mel_bins", self.num_mel_bins, 1, 512, "", integer=True)
        InputRange(self.t_min, self.t_max, self.max_batch)          # the one set of range checks

    @classmethod
    def from_config(cls, config: ModelConfig, max_batch: int | None = None) -> "InputSpec":
        return cls(num_mel_bins=config.num_mel_bins, t_min=config.input.t_min, t_max=config.input.t_max,
                   max_batch=max_batch if max_batch is not None else config.input.max_batch)

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
    """Shared plumbing: input spec from the model config, context manager and ``closed`` state."""

    name = "base"

    def __init__(self, config: ModelConfig | dict[str, Any], max_batch: int | None = None,
                 origin: str = "the model"):
        self.config: ModelConfig = check_config(config, origin)      # every engine checks its config once, at load
        self.labels: list[str] = list(self.config.labels)
        try:
            self.spec = InputSpec.from_config(self.config, max_batch)
        except ConfigError as e:
            raise ConfigError(f"{e} (the engine's max_batch option)") from e
        self._closed = False

    def check_output_size(self, origin: str) -> None:
        """Score one window of digital silence at the config's F: the graph must accept it and give one score per
        label (a label list that does not match the model, or a symbolic F the graph cannot take, fails here at
        load time instead of on every file)."""
        t = min(max(self.spec.t_min, 100), self.spec.t_max)
        x = np.zeros((1, t, self.spec.num_mel_bins), np.float32)
        try:
            y = np.asarray(self.infer(x))
        except Exception as e:  # noqa: BLE001 - any backend failure here is a model that does not fit its config
            raise ModelFileError(f"{origin}: the model fails on a (1, {t}, {self.spec.num_mel_bins}) window "
                                 f"as its config describes it: {type(e).__name__}: {str(e).strip()[:200]}") from e
        if y.shape != (1, len(self.labels)):
            raise ModelFileError(f"{origin}: the model gives scores of shape {tuple(y.shape)} for one window, but "
                                 f"its config lists {len(self.labels)} labels")

    def close(self) -> None:
        self._closed = True

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.name} engine is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.config.name or '?'!r}, classes={len(self.labels)}, "
                f"spec={self.spec})")


@dataclass(frozen=True)
class ModelFiles:
    """What a ``model_path`` points at.

    Attributes:
        kind: ``"checkpoint"`` (a directory), ``"onnx"`` or ``"plan"``.
        path: the path as given, resolved.
        checkpoint_dir: the checkpoint directory, where there is one.
        onnx: the ONNX file, where there is one (``dir/model.onnx`` for a checkpoint).
        config_json: a ``config.json`` beside the model, where there is one.
    """

    kind: str
    path: Path
    checkpoint_dir: Path | None = None
    onnx: Path | None = None
    config_json: Path | None = None


def resolve_model_path(model_path: str | Path) -> ModelFiles:
    """Classify ``model_path`` as a checkpoint directory, an ``.onnx`` file or a ``.plan`` file.

    Raises:
        FileNotFoundError: the path does not exist.
        ModelFileError: the path exists but is none of the accepted kinds.
    """
    p = Path(model_path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model path {str(p)!r} does not exist; pass a checkpoint directory "
                                "(config.json + model.safetensors), an .onnx file or a .plan file")
    p = p.resolve()
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.is_file():
            raise ModelFileError(f"{str(p)!r} is not a checkpoint directory: it has no config.json")
        onnx = p / "model.onnx"
        return ModelFiles("checkpoint", p, checkpoint_dir=p, onnx=onnx if onnx.is_file() else None, config_json=cfg)
    beside = p.parent / "config.json"
    beside_cfg = beside if beside.is_file() else None
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return ModelFiles("onnx", p, onnx=p, config_json=beside_cfg)
    if suffix in (".plan", ".engine", ".trt"):
        return ModelFiles("plan", p, config_json=beside_cfg)
    raise ModelFileError(f"cannot tell what {str(p)!r} is: expected a checkpoint directory, an .onnx file "
                         "or a .plan file")


def read_config_json(path: Path) -> ModelConfig:
    """Read a model ``config.json`` (or the JSON text of ONNX metadata ``aed_config``) into a dict."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read model config {str(path)!r}: {e}") from e
    return check_config(cfg, str(path))


def check_config(cfg: Any, origin: str) -> ModelConfig:
    """The model config as a checked :class:`~realtime.config.ModelConfig`, or a one-line ModelFileError naming
    ``origin`` and what is wrong (labels, input range, front end, window, detection settings)."""
    try:
        return ModelConfig.from_dict(cfg, origin=f"model config from {origin}")
    except ConfigError as e:
        raise ModelFileError(str(e)) from e
