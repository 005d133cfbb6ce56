"""Op-support check: an ONNX graph against the TensorRT ONNX parser's operator list, in plain Python.

The list is ``engines/data/trt_onnx_ops.json`` (from onnx-tensorrt's ``docs/operators.md``). The check
runs before every TensorRT build and on its own with ``aed build-engine MODEL.onnx --check-only``,
without TensorRT.

Example:
    >>> report = check_op_support("model.onnx")    # doctest: +SKIP
    >>> report.ok, report.summary()                 # doctest: +SKIP
    (True, 'all 32 operator types (opset 17) are supported by TensorRT\'s ONNX parser')
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engines.onnx_info import OnnxInfo, read_onnx_info
from engines.assets import trt_op_table_path
from realtime.errors import ModelFileError

__all__ = ["OpTable", "OpSupportReport", "load_op_table", "load_supported_ops", "check_op_support"]

_LAYER_NORM_ONNX_OPSET = 17


@dataclass(frozen=True)
class OpTable:
    """TensorRT's ONNX-parser operator list: supported names, the opset range, per-operator restrictions."""

    supported: frozenset[str]
    opset_range: tuple[int, int] | None = None
    restrictions: dict[str, str] = field(default_factory=dict)
    source: str = ""


def load_op_table(path: str | Path | None = None) -> OpTable:
    """Read the operator list (default :func:`engines.assets.trt_op_table_path`, ``engines/data/trt_onnx_ops.json``).

    Accepts a JSON list of names, or an object whose ``supported`` (or ``ops``/``operators``) entry is a
    list of names or a mapping from names to details (entries marked ``"supported": false`` are dropped),
    with optional ``opset_range`` ``[lo, hi]`` and ``restrictions`` ``{op: text}``.
    """
    if path is None:
        path = trt_op_table_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path} (the TensorRT ONNX operator list) is missing")
    raw = doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(doc, dict):
        raw = next((doc[k] for k in ("supported", "ops", "supported_ops", "operators") if k in doc), None)
    if isinstance(raw, dict):
        names = {k for k, v in raw.items() if not (isinstance(v, dict) and v.get("supported") is False)}
    elif isinstance(raw, list):
        names = {x if isinstance(x, str) else x["name"] for x in raw}
    else:
        raise ModelFileError(f"{str(path)!r}: expected a list of operator names")
    meta = doc if isinstance(doc, dict) else {}
    rng = meta.get("opset_range")
    return OpTable(frozenset(names), (int(rng[0]), int(rng[1])) if rng else None,
                   dict(meta.get("restrictions", {})), str(meta.get("tensorrt_version", "")))


def load_supported_ops(path: str | Path | None = None) -> set[str]:
    """The supported operator names of :func:`load_op_table`."""
    return set(load_op_table(path).supported)


@dataclass
class OpSupportReport:
    """Result of :func:`check_op_support`."""

    opset: int
    ops: dict[str, int]
    unsupported: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"all {len(self.ops)} operator types (opset {self.opset}) are supported by TensorRT's ONNX parser"
        parts = []
        if self.unsupported:
            parts.append("not supported by TensorRT's ONNX parser: "
                         + ", ".join(f"{k} (x{v})" for k, v in sorted(self.unsupported.items())))
        return "; ".join(parts + self.problems)


def check_op_support(model: str | Path | OnnxInfo, supported: set[str] | OpTable | None = None) -> OpSupportReport:
    """Check every operator of an ONNX graph against TensorRT's ONNX-parser operator list.

    Also flags the export pitfalls recorded in docs/ARCHITECTURE.md: GridSample at opset >= 20 (written
    with mode ``linear``, which the parser replaces by nearest without an error) and a default-domain
    opset below 17 (no native LayerNormalization, so FP16 cannot keep it in FP32). The table's
    restrictions for operators present in the graph come back as ``notes`` (not failures).
    """
    info = model if isinstance(model, OnnxInfo) else read_onnx_info(model)
    table = load_op_table() if supported is None else supported
    if not isinstance(table, OpTable):
        table = OpTable(frozenset(table))
    unsupported = {op: n for op, n in info.ops.items() if op not in table.supported}
    problems = []
    if table.opset_range and not (table.opset_range[0] <= info.opset <= table.opset_range[1]):
        problems.append(f"opset {info.opset} is outside the range TensorRT {table.source} imports "
                        f"({table.opset_range[0]}..{table.opset_range[1]})")
    if info.opset >= 20 and "GridSample" in info.ops:
        problems.append(f"GridSample at opset {info.opset}: TensorRT reads mode 'linear' as nearest; "
                        "export at opset 17")
    if 0 < info.opset < _LAYER_NORM_ONNX_OPSET:
        problems.append(f"opset {info.opset} < 17: LayerNorm is decomposed and cannot be kept in FP32; "
                        "export at opset 17")
    notes = [f"{op}: {table.restrictions[op]}" for op in sorted(info.ops) if op in table.restrictions]
    return OpSupportReport(info.opset, dict(info.ops), unsupported, problems, notes)
