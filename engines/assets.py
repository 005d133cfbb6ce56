"""Where the engines find their files on disk: the one documented place.

- The TensorRT ONNX-parser operator list is the engines' own data: ``engines/data/trt_onnx_ops.json``.
- The shipped default model is the models package's data, ``models/pretrained/aed_default/`` (config, weights,
  ONNX and ``ATTRIBUTION.md``). It is located with ``importlib.util.find_spec``, which finds the package without
  importing it, so an edge install (NumPy + ONNX Runtime, no torch) can run it.

Both ship in the wheel (``[tool.setuptools.package-data]`` in ``pyproject.toml``).

Example:
    >>> trt_op_table_path().name
    'trt_onnx_ops.json'
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["DEFAULT_MODEL_NAME", "default_model_path", "pretrained_dir", "trt_op_table_path"]

DEFAULT_MODEL_NAME = "aed_default"
_DATA = Path(__file__).resolve().parent / "data"


def trt_op_table_path() -> Path:
    """The TensorRT ONNX-parser operator list (from onnx-tensorrt's ``docs/operators.md``)."""
    return _DATA / "trt_onnx_ops.json"


def pretrained_dir() -> Path | None:
    """``models/pretrained`` of the installed models package (None where there is no models package)."""
    spec = importlib.util.find_spec("models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) / "pretrained" if locations else None


def default_model_path(name: str | None = None) -> Path:
    """The shipped default model, ``models/pretrained/aed_default`` (found without importing torch).

    Raises:
        FileNotFoundError: no trained default model is shipped.
    """
    name = name or DEFAULT_MODEL_NAME
    base = pretrained_dir()
    path = base / name if base is not None else None
    if path is None or not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no trained default model is shipped yet (expected {path or 'models/pretrained/' + name}); "
            "pass one with --model PATH (a checkpoint directory, an .onnx file or a .plan file), e.g. one "
            "made by 'aed train' and 'aed export'")
    return path
