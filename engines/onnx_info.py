"""Read what the engines need from an ONNX file without the ``onnx`` package.

The edge install (numpy + onnxruntime) and the TensorRT install do not carry ``onnx``, yet the
TensorRT builder needs the operator list (for the op-support check), the input names and shapes
(for the optimisation profile) and the ``aed_config`` metadata. ONNX files are protocol buffers;
this module walks the few ``ModelProto`` fields involved straight from the wire format, skipping
weight tensors without copying them.

Example:
    >>> info = read_onnx_info("model.onnx")            # doctest: +SKIP
    >>> info.inputs["fbank"], info.opset, info.metadata["aed_config"][:10]  # doctest: +SKIP
    ((-1, -1, 64), 17, '{"name": "')
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from engines.base import ModelFileError, check_config, read_config_json
from realtime.config import ModelConfig

__all__ = ["OnnxInfo", "read_onnx_info", "parse_onnx_bytes", "sha256_file", "onnx_model_config"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class _WireError(ValueError):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    n = len(buf)
    while True:
        if i >= n:
            raise _WireError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field_number, wire_type, value)`` for every field of one message."""
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        if num == 0:
            raise _WireError("field number 0")
        if wt == _VARINT:
            v, i = _varint(buf, i)
            yield num, wt, v
        elif wt == _LEN:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise _WireError("length-delimited field runs past the end of the message")
            yield num, wt, buf[i:i + ln]
            i += ln
        elif wt == _I64:
            if i + 8 > n:
                raise _WireError("truncated fixed64")
            yield num, wt, int.from_bytes(buf[i:i + 8], "little")
            i += 8
        elif wt == _I32:
            if i + 4 > n:
                raise _WireError("truncated fixed32")
            yield num, wt, int.from_bytes(buf[i:i + 4], "little")
            i += 4
        else:
            raise _WireError(f"unsupported wire type {wt}")


def _str(v: int | memoryview) -> str:
    if not isinstance(v, memoryview):
        raise _WireError("expected a string field")
    return bytes(v).decode("utf-8")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class OnnxInfo:
    """What an ONNX model declares.

    Attributes:
        ir_version: the ONNX IR version.
        opset: the default-domain opset version (0 where none is declared).
        opsets: every imported domain and its version (``""`` is the default domain).
        ops: how often each operator occurs, keyed ``"Op"`` for the default domain and ``"domain::Op"``
            otherwise; nodes inside subgraphs and model-local functions are counted, calls to those
            functions are not.
        inputs: graph inputs (initialisers excluded) and their shapes; ``-1`` marks a symbolic dim.
        input_dim_names: the symbolic dim names per input (``None`` for fixed dims).
        outputs: graph output names in order.
        metadata: ``metadata_props`` as a dict (``aed_config`` lives here).
        producer: producer name and version.
    """

    ir_version: int = 0
    opset: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    ops: Counter = field(default_factory=Counter)
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_dim_names: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = ""


def _shape(type_proto: memoryview) -> tuple[tuple[int, ...], tuple[str | None, ...]]:
    dims: list[int] = []
    names: list[str | None] = []
    for num, _, v in _fields(type_proto):
        if num != 1 or not isinstance(v, memoryview):  # TypeProto.tensor_type
            continue
        for tnum, _, tv in _fields(v):
            if tnum != 2 or not isinstance(tv, memoryview):  # Tensor.shape
                continue
            for dnum, _, dv in _fields(tv):
                if dnum != 1 or not isinstance(dv, memoryview):  # TensorShapeProto.dim
                    continue
                value, name = -1, None
                for fnum, _, fv in _fields(dv):
                    if fnum == 1 and isinstance(fv, int):
                        value = _signed(fv)
                    elif fnum == 2:
                        name = _str(fv)
                dims.append(value)
                names.append(name)
    return tuple(dims), tuple(names)


def _nodes(graph: memoryview) -> Iterator[tuple[str, str, list[memoryview]]]:
    """Yield ``(domain, op_type, subgraphs)`` for every node of a graph (or function body)."""
    for num, _, v in _fields(graph):
        if num != 1 or not isinstance(v, memoryview):
            continue
        domain, op, subgraphs = "", "", []
        for nnum, _, nv in _fields(v):
            if nnum == 4:
                op = _str(nv)
            elif nnum == 7:
                domain = _str(nv)
            elif nnum == 5 and isinstance(nv, memoryview):  # AttributeProto
                for anum, _, av in _fields(nv):
                    if anum in (6, 11) and isinstance(av, memoryview):  # g, graphs
                        subgraphs.append(av)
        yield domain, op, subgraphs


def _count_ops(graph: memoryview, functions: dict[tuple[str, str], memoryview], ops: Counter,
               depth: int = 0) -> None:
    if depth > 32:
        raise _WireError("subgraphs nested too deeply")
    for domain, op, subgraphs in _nodes(graph):
        if (domain, op) in functions:
            _count_ops(functions[(domain, op)], functions, ops, depth + 1)
            continue
        key = op if domain in ("", "ai.onnx") else f"{domain}::{op}"
        ops[key] += 1
        for sub in subgraphs:
            _count_ops(sub, functions, ops, depth + 1)


def parse_onnx_bytes(data: bytes | memoryview) -> OnnxInfo:
    """Parse a serialised ``ModelProto``.

    Raises:
        ValueError: the bytes are not a valid ONNX model.
    """
    buf = memoryview(data)
    info = OnnxInfo()
    graph: memoryview | None = None
    functions: dict[tuple[str, str], memoryview] = {}
    try:
        producer = ["", ""]
        for num, wt, v in _fields(buf):
            if num == 1 and wt == _VARINT:
                info.ir_version = int(v)
            elif num == 2:
                producer[0] = _str(v)
            elif num == 3:
                producer[1] = _str(v)
            elif num == 7 and isinstance(v, memoryview):
                graph = v
            elif num == 8 and isinstance(v, memoryview):
                dom, ver = "", 0
                for onum, _, ov in _fields(v):
                    if onum == 1:
                        dom = _str(ov)
                    elif onum == 2 and isinstance(ov, int):
                        ver = _signed(ov)
                info.opsets["" if dom == "ai.onnx" else dom] = ver
            elif num == 14 and isinstance(v, memoryview):
                key = value = ""
                for mnum, _, mv in _fields(v):
                    if mnum == 1:
                        key = _str(mv)
                    elif mnum == 2:
                        value = _str(mv)
                info.metadata[key] = value
            elif num == 25 and isinstance(v, memoryview):
                fname = fdomain = ""
                body = bytearray()
                for fnum, _, fv in _fields(v):
                    if fnum == 1:
                        fname = _str(fv)
                    elif fnum == 10:
                        fdomain = _str(fv)
                    elif fnum == 7 and isinstance(fv, memoryview):
                        # Re-wrap each FunctionProto.node as GraphProto.node (field 1) so _nodes reads it.
                        body += bytes([0x0A]) + _encode_varint(len(fv)) + bytes(fv)
                functions[(fdomain, fname)] = memoryview(bytes(body))
        if graph is None:
            raise _WireError("no graph")
        info.producer = " ".join(p for p in producer if p)
        info.opset = info.opsets.get("", 0)
        initializers: set[str] = set()
        graph_inputs: list[tuple[str, memoryview | None]] = []
        for num, _, v in _fields(graph):
            if num == 5 and isinstance(v, memoryview):  # TensorProto: name is field 8
                for tnum, _, tv in _fields(v):
                    if tnum == 8:
                        initializers.add(_str(tv))
            elif num in (11, 12) and isinstance(v, memoryview):
                name, typ = "", None
                for vnum, _, vv in _fields(v):
                    if vnum == 1:
                        name = _str(vv)
                    elif vnum == 2 and isinstance(vv, memoryview):
                        typ = vv
                if num == 11:
                    graph_inputs.append((name, typ))
                else:
                    info.outputs.append(name)
        for name, typ in graph_inputs:
            if name in initializers:
                continue
            dims, names = _shape(typ) if typ is not None else ((), ())
            info.inputs[name] = dims
            info.input_dim_names[name] = names
        _count_ops(graph, functions, info.ops)
    except (_WireError, UnicodeDecodeError) as e:
        raise ModelFileError(f"not a valid ONNX model ({e})") from None
    if not info.ops or not info.outputs:
        raise ModelFileError("not a valid ONNX model (empty graph)")
    return info


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """Parse an ONNX file (weights in external data files are not read).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a valid ONNX model; the message names the file.
    """
    p = Path(path)
    data = p.read_bytes()
    try:
        return parse_onnx_bytes(data)
    except ValueError as e:
        raise ModelFileError(f"{str(p)!r} is {e}") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def onnx_model_config(onnx_path: str | Path, info: OnnxInfo | None = None,
                      metadata: dict[str, str] | None = None) -> ModelConfig:
    """The model config from ONNX metadata ``aed_config``, else from ``config.json`` beside the file.

    Args:
        onnx_path: the ONNX file.
        info: its parsed :class:`OnnxInfo`, where already read.
        metadata: its metadata, where already read (e.g. from an ONNX Runtime session); skips parsing.
    """
    onnx_path = Path(onnx_path)
    if metadata is None:
        try:
            metadata = (info or read_onnx_info(onnx_path)).metadata
        except ValueError as e:
            raise ModelFileError(str(e)) from None
    if "aed_config" in metadata:
        try:
            return check_config(json.loads(metadata["aed_config"]), f"{onnx_path.name} metadata aed_config")
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{str(onnx_path)!r}: metadata aed_config is not JSON ({e})") from None
    beside = onnx_path.parent / "config.json"
    if beside.is_file():
        return read_config_json(beside)
    raise ModelFileError(f"{str(onnx_path)!r} has no 'aed_config' metadata and no config.json beside it; "
                         "export it with: aed export MODEL -o model.onnx")

