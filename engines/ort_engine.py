"""ONNX Runtime engine: the embedded default on CPUs and edge devices.

Example:
    >>> from engines.ort_engine import OnnxRuntimeEngine                # doctest: +SKIP
    >>> with OnnxRuntimeEngine("model.onnx", intra_op_num_threads=1) as eng:  # doctest: +SKIP
    ...     scores = eng.infer(np.zeros((1, 100, eng.spec.num_mel_bins), np.float32))
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engines.base import (
    EngineBase, ModelFileError, check_config, missing_dependency, read_config_json, resolve_model_path,
)
from engines.onnx_info import onnx_model_config
from realtime.config import ModelConfig
from realtime.errors import ConfigError

__all__ = ["OnnxRuntimeEngine", "GRAPH_OPTIMIZATION_LEVELS"]

log = logging.getLogger(__name__)

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_dependency("onnxruntime", "the onnxruntime engine", e) from e
    return ort


def _check_same_model(config: ModelConfig, embedded: ModelConfig, onnx_path: Path) -> None:
    """A checkpoint's ``model.onnx`` must describe the same model as its ``config.json`` (labels, input, front end);
    detection settings may differ (``config.json`` wins: they are tuned after export)."""
    for key in ("labels", "input", "frontend"):
        if getattr(config, key) != getattr(embedded, key):
            raise ModelFileError(f"{str(onnx_path)!r} is stale: its embedded {key!r} differs from config.json "
                                 f"beside it; re-export it with: aed export {onnx_path.parent} -o {onnx_path}")


class OnnxRuntimeEngine(EngineBase):
    """Run an exported model with ONNX Runtime.

    Args:
        model_path: an ``.onnx`` file, or a checkpoint directory holding ``model.onnx``.
        providers: execution providers, in order; default ``["CPUExecutionProvider"]``. Given
            explicitly so that a missing GPU provider is an error, not a quiet CPU run.
        intra_op_num_threads: threads inside one operator (default 1, as an edge deployment wants).
        inter_op_num_threads: threads across operators (default 1).
        graph_optimization_level: one of ``disable``, ``basic``, ``extended``, ``all`` (default).
        max_batch: largest batch accepted by :meth:`infer` (default 64).
        optimized_model_path: where to save the optimised graph, for inspecting what really runs.
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, *, providers: Sequence[str] | None = None,
                 intra_op_num_threads: int = 1, inter_op_num_threads: int = 1,
                 graph_optimization_level: str = "all", max_batch: int | None = None,
                 optimized_model_path: str | Path | None = None) -> None:
        ort = _import_ort()
        files = resolve_model_path(model_path)
        if files.kind == "plan":
            raise ModelFileError(f"{str(files.path)!r} is a TensorRT plan; the onnxruntime engine needs an .onnx file")
        if files.onnx is None:
            raise ModelFileError(f"checkpoint {str(files.path)!r} has no model.onnx; make one with: "
                                 f"aed export {files.path} -o {files.path / 'model.onnx'}")
        if graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
            raise ConfigError(f"graph_optimization_level must be one of {GRAPH_OPTIMIZATION_LEVELS}, "
                             f"got {graph_optimization_level!r}")
        for what, n in (("intra_op_num_threads", intra_op_num_threads), ("inter_op_num_threads", inter_op_num_threads)):
            if int(n) < 0:
                raise ConfigError(f"{what} must be >= 0 (0 lets ONNX Runtime choose), got {n}")
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        unknown = [p for p in providers if p not in ort.get_available_providers()]
        if unknown:
            raise ConfigError(f"execution providers {unknown} are not available in this onnxruntime build; "
                             f"available: {ort.get_available_providers()}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(intra_op_num_threads)
        so.inter_op_num_threads = int(inter_op_num_threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization_level]
        if optimized_model_path is not None:
            so.optimized_model_filepath = str(optimized_model_path)
        try:
            self._session = ort.InferenceSession(str(files.onnx), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types (InvalidProtobuf, Fail, ...)
            raise ModelFileError(f"onnxruntime cannot load {str(files.onnx)!r}: {type(e).__name__}: "
                                 f"{str(e).strip().splitlines()[0] if str(e).strip() else 'invalid model'}") from e
        meta = self._session.get_modelmeta().custom_metadata_map
        if files.kind == "checkpoint":
            # a checkpoint's config.json is its one source of truth, for this engine as for the torch engine
            config = read_config_json(files.config_json)  # type: ignore[arg-type]
            if "aed_config" in meta:
                embedded = check_config(onnx_model_config(files.onnx, metadata=meta), repr(str(files.onnx)))
                _check_same_model(check_config(config, repr(str(files.config_json))), embedded, files.onnx)
        else:
            config = onnx_model_config(files.onnx, metadata=meta)
        super().__init__(config, max_batch=max_batch, origin=repr(str(files.path)))
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3:
            raise ModelFileError(f"{str(files.onnx)!r}: expected one (batch, time, F) input, got "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        self._input = inputs[0].name
        f_dim = inputs[0].shape[2]
        if isinstance(f_dim, int) and f_dim != self.spec.num_mel_bins:
            raise ModelFileError(f"{str(files.onnx)!r}: the graph takes F={f_dim} mel bins but its config says "
                                 f"{self.spec.num_mel_bins}")
        outputs = [o.name for o in self._session.get_outputs()]
        if "scores" not in outputs:
            raise ModelFileError(f"{str(files.onnx)!r}: no 'scores' output (outputs: {outputs})")
        self._outputs = ["scores"]
        self._frame_outputs = ["scores", "frame_scores"] if "frame_scores" in outputs else None
        self.path = files.onnx
        self.providers = self._session.get_providers()
        self.check_output_size(repr(str(files.onnx)))
        log.debug("onnxruntime session for %s on %s, %d/%d threads", files.onnx, self.providers,
                  intra_op_num_threads, inter_op_num_threads)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Scores ``(B, C)`` float32 for windows ``x`` of shape ``(B, T, F)``."""
        self._ensure_open()
        x = self.spec.check(x)
        (scores,) = self._session.run(self._outputs, {self._input: x})
        return np.asarray(scores, dtype=np.float32)

    @property
    def has_frames(self) -> bool:
        """Whether the graph has the frame head's ``frame_scores`` output."""
        return self._frame_outputs is not None

    def infer_frames(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip scores ``(B, C)`` and frame scores ``(B, T', C)`` for windows ``x`` ``(B, T, F)``, in one run."""
        self._ensure_open()
        if self._frame_outputs is None:
            raise ModelFileError(f"{str(self.path)!r} has no 'frame_scores' output: the model has no frame head")
        x = self.spec.check(x)
        clip, frames = self._session.run(self._frame_outputs, {self._input: x})
        return np.asarray(clip, dtype=np.float32), np.asarray(frames, dtype=np.float32)

    def close(self) -> None:
        self._session = None
        super().close()
