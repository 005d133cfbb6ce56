"""Shared ONNX test helpers: one ONNX Runtime session maker and one TensorRT operator check.

The operator check is the one ``aed build-engine`` runs before every build (``engines.trt_ops.check_op_support``,
against the TensorRT ONNX parser's operator list shipped with the project), so a test that passes here is a graph
the build would accept. The list ships with the project: a missing list fails, it does not skip.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

__all__ = ["ort_session", "assert_tensorrt_ops", "trt_op_list_path", "trt_op_list"]


def ort_session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session on ``path`` with ``threads`` intra-op threads and one inter-op thread.

    Skips the test where ``onnxruntime`` is not installed.
    """
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def assert_tensorrt_ops(path: str | Path):
    """Fail unless every operator of the ONNX graph at ``path`` is one TensorRT's ONNX parser supports.

    Also fails on the export pitfalls the check knows (GridSample at opset >= 20, opset < 17). Returns the
    :class:`engines.trt_ops.OpSupportReport`.
    """
    from engines.trt_ops import check_op_support, load_supported_ops

    report = check_op_support(path)
    assert report.ok, report.summary()
    supported = load_supported_ops()
    assert all(op in supported for op in report.ops), sorted(set(report.ops) - supported)
    return report


def trt_op_list_path() -> Path:
    """Where the TensorRT ONNX parser's operator list lives in the source tree (the one place tests name it)."""
    return Path(__file__).resolve().parents[1] / "engines" / "data" / "trt_onnx_ops.json"


def trt_op_list() -> dict:
    """The operator list document itself (source, TensorRT version, supported and unsupported names)."""
    return json.loads(trt_op_list_path().read_text(encoding="utf-8"))
