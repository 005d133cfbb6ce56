"""TensorRT engine: the GPU production path. Building lives in ``engines.trt_build``.

CUDA memory and streams come from ``cuda-python`` (``cuda.bindings.runtime``), not from torch: the
``tensorrt`` extra then stays a small install (no 4.6 GB torch on an inference server), and every
CUDA call returns an error code that is turned into a ``RuntimeError`` here instead of being lost.

Example:
    >>> from engines.trt_engine import TensorRTEngine                   # doctest: +SKIP
    >>> with TensorRTEngine("model.onnx", precision="fp16") as eng:     # builds once, then uses the cache
    ...     scores = eng.infer(np.zeros((4, 100, eng.spec.num_mel_bins), np.float32))
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineBase, InputSpec, ModelFileError, resolve_model_path
from engines.trt_build import (
    ProfileShapes, cuda_check, detect_env, ensure_engine, import_cudart, import_tensorrt, read_plan, stale_reasons,
)
from realtime.errors import ConfigError, EngineError

__all__ = ["TensorRTEngine"]

log = logging.getLogger(__name__)


class TensorRTEngine(EngineBase):
    """Run a TensorRT engine with ``execute_async_v3``, tensors bound by name.

    Args:
        model_path: an ``.onnx`` file or a checkpoint directory with ``model.onnx`` (the engine is built,
            or taken from the cache when its key fits), or an aed ``.plan`` from ``aed build-engine``
            (loaded only when it was built for this TensorRT version and GPU).
        precision: ``"fp32"`` or ``"fp16"`` when building.
        window_s, min_window_s, max_window_s, max_batch, opt_batch: the optimisation profile when building
            (see ``engines.trt_build.make_profile``).
        cache_dir: engine and timing-cache directory when building.
        rebuild: build even when a cached engine fits.
        device: CUDA device index.
    """

    name = "tensorrt"

    def __init__(self, model_path: str | Path, *, precision: str = "fp32", window_s: float | None = None,
                 min_window_s: float | None = None, max_window_s: float | None = None, max_batch: int = 32,
                 opt_batch: int = 1, cache_dir: str | Path | None = None, rebuild: bool = False,
                 device: int = 0) -> None:
        trt = import_tensorrt()
        cudart = self._cudart = import_cudart()
        self._trt = trt
        self._buffers: list[Any] = []
        self._stream = None
        cuda_check(cudart, cudart.cudaSetDevice(int(device)), f"cudaSetDevice({device})")
        files = resolve_model_path(model_path)
        env = detect_env(device)
        if files.kind == "plan":
            plan = files.path
            header, blob = read_plan(plan)
            reasons = stale_reasons(header, env)
            if reasons:
                raise ModelFileError(f"{str(plan)!r} was built for another machine or version ({'; '.join(reasons)}); "
                                     f"a stale engine is never loaded: rebuild it with aed build-engine MODEL.onnx "
                                     f"-o {plan.name}, or pass the .onnx file to build and cache one")
        else:
            if files.onnx is None:
                raise ModelFileError(f"checkpoint {str(files.path)!r} has no model.onnx; make one with: "
                                     f"aed export {files.path} -o {files.path / 'model.onnx'}")
            plan = ensure_engine(files.onnx, precision=precision, window_s=window_s, min_window_s=min_window_s,
                                 max_window_s=max_window_s, max_batch=max_batch, opt_batch=opt_batch,
                                 cache_dir=cache_dir, rebuild=rebuild, env=env)
            header, blob = read_plan(plan)
        profile = ProfileShapes.from_dict(header["key_fields"]["profile"])
        super().__init__(header["config"])
        self.spec = InputSpec(profile.min[2], profile.min[1], profile.max[1], profile.max[0])
        self.plan_path = plan
        self.precision = header["key_fields"]["precision"]

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise ModelFileError(f"TensorRT could not deserialise {str(plan)!r} (see the TensorRT log); rebuild it "
                                 "with aed build-engine")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [profile.input_name] or "scores" not in names:
            raise ModelFileError(f"{str(plan)!r}: expected input {profile.input_name!r} and output 'scores', "
                                 f"got {names}")
        self._input, self._names = profile.input_name, names
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._stream = cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")

        # Device buffers sized for the profile's largest shapes, bound by name once.
        if not self._context.set_input_shape(self._input, profile.max):
            raise EngineError(f"TensorRT refused input shape {profile.max} for {self._input!r}")
        self._ptr: dict[str, int] = {}
        for n in names:
            shape = tuple(self._context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise EngineError(f"TensorRT could not infer the shape of {n!r} at the max profile (got {shape})")
            nbytes = int(np.prod(shape)) * self._dtypes[n].itemsize
            ptr = cuda_check(cudart, cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes}) for {n!r}")
            self._buffers.append(ptr)
            self._ptr[n] = int(ptr)
            if not self._context.set_tensor_address(n, int(ptr)):
                raise EngineError(f"TensorRT refused the device address for {n!r}")
        log.info("TensorRT engine %s: %s, profile %s..%s", plan, self.precision, profile.min, profile.max)

    @property
    def has_frames(self) -> bool:
        """Whether the plan has the frame head's ``frame_scores`` output."""
        return "frame_scores" in self._names

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Scores ``(B, C)`` float32 for windows ``x`` of shape ``(B, T, F)``."""
        return self._run(x, ("scores",))[0]

    def infer_frames(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip scores ``(B, C)`` and frame scores ``(B, T', C)`` for windows ``x`` ``(B, T, F)``."""
        if not self.has_frames:
            raise ModelFileError(f"{str(self.plan_path)!r} has no 'frame_scores' output (outputs: {self._names})")
        clip, frames = self._run(x, ("scores", "frame_scores"))
        return clip, frames

    def _run(self, x: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        self._ensure_open()
        cudart = self._cudart
        x = np.ascontiguousarray(self.spec.check(x), dtype=self._dtypes[self._input])
        if not self._context.set_input_shape(self._input, x.shape):
            raise ConfigError(f"TensorRT refused input shape {x.shape}; accepted: {self.spec}")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(cudart, cudart.cudaMemcpyAsync(self._ptr[self._input], x.ctypes.data, x.nbytes, h2d, self._stream),
                   "cudaMemcpyAsync (input)")
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        outs = []
        for name in outputs:
            out = np.empty(tuple(self._context.get_tensor_shape(name)), dtype=self._dtypes[name])
            cuda_check(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self._ptr[name], out.nbytes, d2h, self._stream),
                       f"cudaMemcpyAsync ({name})")
            outs.append(out)
        cuda_check(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return [o.astype(np.float32, copy=False) for o in outs]

    def close(self) -> None:
        if self._closed:
            return
        cudart = self._cudart
        for ptr in self._buffers:
            cuda_check(cudart, cudart.cudaFree(ptr), "cudaFree")
        self._buffers.clear()
        if self._stream is not None:
            cuda_check(cudart, cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None
        self._context = self._engine = self._runtime = None
        super().close()
