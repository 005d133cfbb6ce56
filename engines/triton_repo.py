"""Export a standard Triton model repository for the official Triton container (GPU machines, Kubernetes).

Layout (one model)::

    DIR/
      <model_name>/
        config.pbtxt          platform onnxruntime_onnx (or tensorrt_plan), dynamic batching, time axis -1,
                              the aed model config in parameters { key: "aed_config" }
        1/model.onnx          (or 1/model.plan: a TensorRT plan, the aed header stripped)

The ``config.pbtxt`` is built as a ``inference.ModelConfig`` protobuf message (tritonclient's ``model_config_pb2``)
and written with ``google.protobuf.text_format``, so it parses the way Triton parses it. Clients of a server running
this repository read the model's config from it (:class:`engines.triton_engine.TritonEngine`), as from ``aed serve``.

Example:
    >>> from engines.triton_repo import export_repository                              # doctest: +SKIP
    >>> export_repository("models/pretrained/aed_default", "repo", max_batch=64)       # doctest: +SKIP
    PosixPath('repo/aed_default/config.pbtxt')
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engines.base import ModelFileError, missing_dependency, resolve_model_path
from engines.triton_serve import AED_CONFIG_PARAMETER, INPUT_NAME, model_name_for
from realtime.config import InputRange, ModelConfig, check_number

__all__ = ["export_repository", "repository_spec", "RepoSpec", "model_config_message", "PLATFORMS"]

log = logging.getLogger(__name__)

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "plan": ("tensorrt_plan", "model.plan")}


def _pb() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise missing_dependency("tritonclient", "aed serve --export-repo", e) from e
    return model_config_pb2


@dataclass(frozen=True)
class RepoSpec:
    """What one exported model is: its file, platform, config, batch limit and outputs."""

    kind: str                      # "onnx" or "plan"
    source: Path                   # the ONNX file, or the aed plan
    config: ModelConfig
    max_batch: int
    outputs: tuple[str, ...]

    @property
    def platform(self) -> str:
        return PLATFORMS[self.kind][0]

    @property
    def filename(self) -> str:
        return PLATFORMS[self.kind][1]


def repository_spec(model_path: str | Path, max_batch: int = 64) -> RepoSpec:
    """Read a checkpoint directory, ``.onnx`` or aed ``.plan`` into what its repository entry needs.

    ONNX: the config and outputs as ONNX Runtime loads them (the same checks as the ``onnxruntime`` engine).
    A plan: its header's config, with the input range and batch limit of its optimisation profile.
    """
    check_number("max_batch", max_batch, 1, 4096, "windows", integer=True)
    files = resolve_model_path(model_path)
    if files.kind == "plan":
        from engines.trt_build import ProfileShapes, read_plan

        header, _ = read_plan(files.path)
        config = ModelConfig.from_dict(header["config"], origin=repr(str(files.path)))
        profile = ProfileShapes.from_dict(header["key_fields"]["profile"])
        plan_max = int(profile.max[0])
        config = replace(config, input=InputRange(int(profile.min[1]), int(profile.max[1]), plan_max))
        outs = header.get("outputs") or ["scores"]
        outputs = tuple(outs if isinstance(outs, (list, tuple)) else list(outs))
        return RepoSpec("plan", files.path, config, min(int(max_batch), plan_max), outputs)
    from engines.ort_engine import OnnxRuntimeEngine

    with OnnxRuntimeEngine(files.path, max_batch=int(max_batch)) as eng:
        outputs = ("scores", "frame_scores") if eng.has_frames else ("scores",)
        return RepoSpec("onnx", Path(eng.path), eng.config, eng.spec.max_batch, outputs)


def model_config_message(spec: RepoSpec, name: str, *, max_queue_delay_ms: float = 5.0, instances: int = 1,
                         kind: str = "KIND_AUTO") -> Any:
    """The Triton ``ModelConfig`` protobuf for ``spec``: batched ``fbank`` (-1, F) in, ``scores`` (C) and
    ``frame_scores`` (-1, C) out, dynamic batching, ``instances`` instances, the aed config in ``parameters``."""
    pb = _pb()
    check_number("max_queue_delay_ms", max_queue_delay_ms, 0.0, 10_000.0, "ms")
    check_number("instances", instances, 1, 64, "", integer=True)
    c = len(spec.config.labels)
    cfg = pb.ModelConfig(name=name, platform=spec.platform, max_batch_size=spec.max_batch)
    cfg.input.add(name=INPUT_NAME, data_type=pb.TYPE_FP32, dims=[-1, spec.config.num_mel_bins])   # (T, F)
    for out in spec.outputs:
        if out == "scores":
            cfg.output.add(name="scores", data_type=pb.TYPE_FP32, dims=[c])                          # (C,)
        elif out == "frame_scores":
            cfg.output.add(name="frame_scores", data_type=pb.TYPE_FP32, dims=[-1, c])                # (T', C)
    cfg.dynamic_batching.max_queue_delay_microseconds = int(round(max_queue_delay_ms * 1000))
    cfg.instance_group.add(count=int(instances), kind=getattr(pb.ModelInstanceGroup, kind))
    cfg.parameters[AED_CONFIG_PARAMETER].string_value = json.dumps(spec.config.to_dict(), sort_keys=True)
    return cfg


def export_repository(model_path: str | Path, out_dir: str | Path, *, model_name: str | None = None,
                      max_batch: int = 64, max_queue_delay_ms: float = 5.0, instances: int = 1,
                      overwrite: bool = False) -> Path:
    """Write ``out_dir/<model_name>/config.pbtxt`` and ``out_dir/<model_name>/1/model.onnx`` (or ``model.plan``).

    Args:
        model_path: a checkpoint directory with ``model.onnx``, an ``.onnx`` file or an aed ``.plan``.
        out_dir: the repository root (created; other models in it are left alone).
        model_name: the model's name in the repository (default: from ``model_path``).
        max_batch: ``max_batch_size`` (a plan's profile may lower it).
        max_queue_delay_ms: the dynamic batcher's queue delay.
        instances: model instances (``instance_group`` count; the kind is left to Triton: GPU where there is one).
        overwrite: replace an existing entry of that name.

    Returns:
        the written ``config.pbtxt``.
    """
    from google.protobuf import text_format

    spec = repository_spec(model_path, max_batch)
    name = model_name or model_name_for(model_path)
    msg = model_config_message(spec, name, max_queue_delay_ms=max_queue_delay_ms, instances=instances)
    entry = Path(out_dir) / name
    if entry.exists() and not overwrite:
        raise ModelFileError(f"{str(entry)!r} already exists; pass --overwrite (overwrite=True) to replace it")
    if entry.exists():
        shutil.rmtree(entry)
    (entry / "1").mkdir(parents=True)
    if spec.kind == "plan":
        from engines.trt_build import read_plan

        _, blob = read_plan(spec.source)               # Triton loads a raw engine: the aed header stays out
        (entry / "1" / spec.filename).write_bytes(blob)
    else:
        shutil.copyfile(spec.source, entry / "1" / spec.filename)
    pbtxt = entry / "config.pbtxt"
    pbtxt.write_text(text_format.MessageToString(msg), encoding="utf-8")
    log.info("wrote Triton model repository entry %s (%s, max_batch_size %d)", entry, spec.platform, spec.max_batch)
    return pbtxt
