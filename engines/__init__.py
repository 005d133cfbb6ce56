"""Inference engines behind one protocol: ONNX Runtime, PyTorch and TensorRT.

Each backend lives in its own module and is imported only when asked for; importing ``engines``
pulls in numpy and nothing else. A missing optional dependency raises
:class:`MissingDependencyError` naming the extra to install; there is no silent fallback.

Example:
    >>> from engines import create_engine                                  # doctest: +SKIP
    >>> with create_engine("auto", "model.onnx") as eng:                   # doctest: +SKIP
    ...     scores = eng.infer(windows)  # (B, T, F) float32 -> (B, C)
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from engines.base import Engine, EngineBase, InputSpec, MissingDependencyError, ModelFileError
from realtime.errors import ConfigError

from engines.assets import DEFAULT_MODEL_NAME, default_model_path  # noqa: F401 - the one place (engines.assets)

__all__ = [
    "create_engine", "available_engines", "default_model_path", "gpu_available", "ENGINE_KINDS",
    "Engine", "EngineBase", "InputSpec", "MissingDependencyError", "ModelFileError",
]

log = logging.getLogger(__name__)

ENGINE_KINDS = ("onnxruntime", "torch", "tensorrt", "triton", "auto")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that fails, or a None entry in sys.modules
        return False


def gpu_available() -> bool:
    """Whether a CUDA GPU is visible, asked of the CUDA runtime (via cuda-python) without importing torch."""
    if not Path("/proc/driver/nvidia").exists() and not Path("/dev/nvidia0").exists():
        return False
    try:
        from engines.trt_build import import_cudart
        cudart = import_cudart()
        err, n = cudart.cudaGetDeviceCount()
        return err == cudart.cudaError_t.cudaSuccess and n > 0
    except (ImportError, RuntimeError, OSError):
        return False


def available_engines() -> list[str]:
    """Engine kinds whose dependencies are installed here (``tensorrt`` also needs a GPU)."""
    out = []
    if _has_module("onnxruntime"):
        out.append("onnxruntime")
    if _has_module("torch") and _has_module("safetensors"):
        out.append("torch")
    if _has_module("tensorrt") and gpu_available():
        out.append("tensorrt")
    return out


def _auto_kind(model_path: str | Path) -> str:
    if str(model_path).lower().endswith((".plan", ".engine", ".trt")):
        return "tensorrt"
    has_trt = _has_module("tensorrt")
    has_gpu = has_trt and gpu_available()
    if has_trt and has_gpu:
        return "tensorrt"
    log.info("engine 'auto': %s; using onnxruntime", "no GPU visible" if has_trt else "TensorRT is not installed")
    return "onnxruntime"


def create_engine(kind: str, model_path: str | Path | None = None, **options: Any) -> Engine:
    """Create an inference engine.

    Args:
        kind: ``onnxruntime``, ``torch``, ``tensorrt``, or ``auto`` (TensorRT where TensorRT and a GPU
            are present, else ONNX Runtime; the choice is logged).
        model_path: a checkpoint directory (config.json + model.safetensors [+ model.onnx]), an ``.onnx``
            file or an aed ``.plan`` file; default :func:`default_model_path`.
        **options: passed to the backend (``OnnxRuntimeEngine``, ``TorchEngine``, ``TensorRTEngine``);
            ``threads`` is accepted by all of them: ONNX Runtime intra-op threads, torch CPU threads,
            ignored by TensorRT.

    Raises:
        ValueError: an unknown kind.
        MissingDependencyError: the backend's package is missing; the message names the extra.
        FileNotFoundError / ModelFileError: the model path is missing, corrupt or of the wrong kind.
    """
    if kind not in ENGINE_KINDS:
        raise ConfigError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
    if kind == "triton":   # model_path is the server's model URL; the model's config comes from the server
        if model_path is None:
            raise ConfigError("the triton engine needs the server's model URL, e.g. "
                              "grpc://127.0.0.1:8001/aed_default (--server URL; start a server with 'aed serve')")
        options.pop("threads", None)
        from engines.triton_engine import TritonEngine
        return TritonEngine(str(model_path), **options)
    if model_path is None:
        model_path = default_model_path()
    if kind == "auto":
        kind = _auto_kind(model_path)
        log.info("engine 'auto' chose %s for %s", kind, model_path)
    threads = options.pop("threads", None)  # one CPU-thread option for every backend
    if threads is not None:
        if kind == "onnxruntime":
            options.setdefault("intra_op_num_threads", threads)
        elif kind == "torch":
            options.setdefault("num_threads", threads)
        else:
            log.debug("threads=%s does not apply to the %s engine", threads, kind)
    if kind == "onnxruntime":
        from engines.ort_engine import OnnxRuntimeEngine
        return OnnxRuntimeEngine(model_path, **options)
    if kind == "torch":
        from engines.torch_engine import TorchEngine
        return TorchEngine(model_path, **options)
    from engines.trt_engine import TensorRTEngine
    return TensorRTEngine(model_path, **options)
