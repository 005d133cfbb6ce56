"""INT8 dynamic quantisation of an exported model with ONNX Runtime's quantiser.

Dynamic quantisation stores MatMul/Gemm weights as int8 and quantises activations on the fly, per
call: no calibration data are needed, and the result runs on any ONNX Runtime CPU build.

Example:
    >>> quantize_int8("model.onnx", "model.int8.onnx")   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

from engines.base import ModelFileError, missing_dependency
from realtime.errors import ConfigError

__all__ = ["quantize_int8", "DEFAULT_OP_TYPES"]

log = logging.getLogger(__name__)

#: The transformer's projections and MLPs; convolutions (patch stem, offset networks) stay float.
DEFAULT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm")


def quantize_int8(onnx_in: str | Path, onnx_out: str | Path, *, op_types: Sequence[str] = DEFAULT_OP_TYPES,
                  per_channel: bool = True) -> Path:
    """Write an INT8 dynamic-quantised copy of ``onnx_in`` to ``onnx_out``, keeping its metadata.

    Args:
        onnx_in: the float model (with ``aed_config`` metadata).
        onnx_out: where the quantised model goes.
        op_types: operator types whose weights are quantised.
        per_channel: one scale per output channel (more accurate than one per tensor).

    Returns:
        ``onnx_out`` as a Path. Its metadata gains ``aed_quantization = "int8-dynamic"``.
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise missing_dependency(getattr(e, "name", None) or "onnx", "INT8 quantisation", e) from e
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if onnx_in.resolve() == onnx_out.resolve():
        raise ConfigError(f"onnx_out must differ from onnx_in ({str(onnx_in)!r})")
    try:
        src = onnx.load(str(onnx_in), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelFileError(f"cannot read ONNX model {str(onnx_in)!r}: {e}") from e
    meta = {p.key: p.value for p in src.metadata_props}
    with tempfile.TemporaryDirectory() as tmp:
        # ORT's own shape-inference/pre-processing pass makes the quantiser see every MatMul's weights.
        pre = Path(tmp) / "pre.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(str(onnx_in), str(pre), skip_symbolic_shape=True)
        except Exception as e:  # pre-processing is an optimisation; quantise the original if it fails
            log.debug("quant_pre_process failed (%s); quantising the model as exported", e)
            pre = onnx_in
        quantize_dynamic(str(pre), str(onnx_out), op_types_to_quantize=list(op_types), per_channel=per_channel,
                         weight_type=QuantType.QInt8)
    out = onnx.load(str(onnx_out))
    kept = {p.key for p in out.metadata_props}  # the quantiser may or may not carry metadata over
    for k, v in meta.items():
        if k not in kept:
            out.metadata_props.add(key=k, value=v)
    entry = next((p for p in out.metadata_props if p.key == "aed_quantization"), None)
    if entry is None:
        out.metadata_props.add(key="aed_quantization", value="int8-dynamic")
    else:
        entry.value = "int8-dynamic"
    onnx.save(out, str(onnx_out))
    log.info("wrote INT8 dynamic-quantised model %s (%s)", onnx_out, ", ".join(op_types))
    return onnx_out
