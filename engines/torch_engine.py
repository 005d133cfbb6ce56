"""PyTorch engine: eager on the CPU for development; half precision and CUDA graphs (or
``torch.compile``) on a CUDA GPU.

Example:
    >>> from engines.torch_engine import TorchEngine                     # doctest: +SKIP
    >>> with TorchEngine("checkpoints/my_model", device="cpu") as eng:   # doctest: +SKIP
    ...     scores = eng.infer(np.zeros((1, 100, eng.spec.num_mel_bins), np.float32))
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineBase, ModelFileError, missing_dependency, resolve_model_path
from realtime.errors import ConfigError, EngineError

__all__ = ["TorchEngine", "MODES", "PRECISIONS"]

log = logging.getLogger(__name__)

MODES = ("eager", "compile", "cuda_graph")
PRECISIONS = ("fp32", "fp16")


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise missing_dependency("torch", "the torch engine", e) from e
    return torch


class TorchEngine(EngineBase):
    """Run a checkpoint (``config.json`` + ``model.safetensors``) with PyTorch.

    Args:
        model_path: a checkpoint directory, loaded with ``models.load``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; default CUDA where available, else CPU.
        precision: ``"fp32"`` or ``"fp16"`` (CUDA only); default fp16 on CUDA, fp32 on CPU.
        mode: ``"eager"``; ``"cuda_graph"`` (CUDA only: one graph captured per input shape (B, T), replayed
            after); or ``"compile"`` (``torch.compile``; on CUDA with ``mode="reduce-overhead"``, which
            also uses CUDA graphs). Default: ``cuda_graph`` on CUDA, ``eager`` on CPU.
        num_threads: CPU threads for torch (sets the process-wide ``torch.set_num_threads``); default untouched.
        max_batch: largest batch accepted by :meth:`infer` (default 64).
        model: an already built model to wrap instead of loading ``model_path`` (then ``config`` is required).
        config: the model config for ``model``.
    """

    name = "torch"

    def __init__(self, model_path: str | Path | None = None, *, device: str | None = None,
                 precision: str | None = None, mode: str | None = None, num_threads: int | None = None,
                 max_batch: int | None = None, model: Any = None, config: dict[str, Any] | None = None) -> None:
        torch = _import_torch()
        self._torch = torch
        if model is None:
            if model_path is None:
                raise ValueError("pass a checkpoint directory (model_path) or a model with its config")
            files = resolve_model_path(model_path)
            if files.kind != "checkpoint":
                raise ModelFileError(f"the torch engine needs a checkpoint directory (config.json + "
                                     f"model.safetensors), got {str(files.path)!r}")
            try:
                import models
            except ImportError as e:
                raise missing_dependency("torch", "the torch engine (package 'models')", e) from e
            model, config = models.load(files.checkpoint_dir)
        elif config is None:
            raise ValueError("a model passed directly needs its config dict")
        origin = repr(str(model_path)) if model_path is not None else "the model given"
        super().__init__(config, max_batch=max_batch, origin=origin)
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"device {device!r} was asked for but torch sees no CUDA GPU")
        precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
        mode = mode or ("cuda_graph" if dev.type == "cuda" else "eager")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if dev.type != "cuda" and (precision == "fp16" or mode == "cuda_graph"):
            raise ConfigError(f"precision={precision!r}, mode={mode!r} need a CUDA device; on {dev} use fp32 eager "
                             "or compile")
        self.device, self.precision, self.mode = dev, precision, mode
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        model = model.eval().to(device=dev, dtype=self._dtype)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self._fn = model
        if mode == "compile":
            self._fn = torch.compile(model, mode="reduce-overhead" if dev.type == "cuda" else "default", dynamic=False)
        self._graphs: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self._has_frames: bool | None = None
        if mode == "eager":          # a captured or compiled graph would be built for this one probe shape
            self.check_output_size(origin)
        log.debug("torch engine on %s, %s, %s", dev, precision, mode)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Scores ``(B, C)`` float32 for windows ``x`` of shape ``(B, T, F)``."""
        self._ensure_open()
        x = self.spec.check(x)
        torch = self._torch
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device, dtype=self._dtype, non_blocking=True)
            if self.mode == "cuda_graph":
                y = self._replay(xt)
            else:
                y = self._fn(xt)
            return y.float().cpu().numpy()

    @property
    def has_frames(self) -> bool:
        """Whether the model has a frame head (found out once, by one forward pass)."""
        if self._has_frames is None:
            with self._torch.inference_mode():
                probe = self._torch.zeros(1, self.spec.t_min, self.spec.num_mel_bins, device=self.device,
                                          dtype=self._dtype)
                self._has_frames = self.model.forward_logits(probe)[1] is not None
        return self._has_frames

    def infer_frames(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip scores ``(B, C)`` and frame scores ``(B, T', C)`` (eager, whatever ``mode`` is)."""
        self._ensure_open()
        x = self.spec.check(x)
        torch = self._torch
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device, dtype=self._dtype)
            clip, frames = self.model.forward_with_frames(xt)
            if frames is None:
                raise ModelFileError(f"model {self.config.name!r} has no frame head")
            return clip.float().cpu().numpy(), frames.float().cpu().numpy()

    def _replay(self, xt: Any) -> Any:
        """Run through a CUDA graph captured for this (B, T); the first call per shape captures it."""
        torch = self._torch
        key = (int(xt.shape[0]), int(xt.shape[1]))
        if key not in self._graphs:
            static_in = xt.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm up (cuDNN/cuBLAS autotuning, lazy allocations) outside the graph
                    self.model(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.model(static_in)
            self._graphs[key] = (graph, static_in, static_out)
            log.debug("captured a CUDA graph for (B, T) = %s", key)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(xt)
        graph.replay()
        return static_out.clone()

    def close(self) -> None:
        self._graphs.clear()
        self._fn = self.model = None
        super().close()
