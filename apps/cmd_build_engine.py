"""``aed build-engine``: build a TensorRT engine from an exported ONNX model (needs the tensorrt extra).

The op-support check (``--check-only``) and the profile checks run without TensorRT.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from apps.errors import UserError

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("build-engine", help="build a TensorRT engine (.plan) from an ONNX model",
                       description="Build a TensorRT engine with an optimisation profile over batch and time. "
                                   "An existing plan at -o is kept when it was built from the same ONNX file, "
                                   "TensorRT version, GPU, precision and profile; otherwise it is rebuilt.")
    p.add_argument("onnx", metavar="MODEL.onnx", help="model exported with 'aed export'")
    p.add_argument("-o", "--output", metavar="FILE.plan", help="engine file (required unless --check-only)")
    p.add_argument("--fp16", action="store_true", help="FP16 (LayerNorm and softmax stay FP32)")
    p.add_argument("--window", type=float, metavar="S", help="window TensorRT tunes for (default: the model's)")
    p.add_argument("--min-window", type=float, metavar="S", help="shortest window accepted (default: the model's)")
    p.add_argument("--max-window", type=float, metavar="S", help="longest window accepted (default: the model's)")
    p.add_argument("--max-batch", type=int, default=32, metavar="B", help="largest batch accepted (default: 32)")
    p.add_argument("--opt-batch", type=int, default=1, metavar="B", help="batch TensorRT tunes for (default: 1)")
    p.add_argument("--cache-dir", metavar="DIR", help="timing-cache directory (default: ~/.cache/aed/tensorrt)")
    p.add_argument("--rebuild", action="store_true", help="build even when the existing plan fits")
    p.add_argument("--check-only", action="store_true",
                   help="only check the graph's operators against TensorRT's ONNX parser (no TensorRT needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engines.base import ModelFileError
    from engines.trt_build import check_op_support, ensure_engine

    onnx = Path(args.onnx)
    if not onnx.is_file():
        raise UserError(f"ONNX file {str(onnx)!r} does not exist")
    if args.check_only:
        try:
            report = check_op_support(onnx)
        except ValueError as e:
            raise UserError(str(e)) from None
        print(report.summary())
        for note in report.notes:
            print(f"  restriction: {note}")
        return 0 if report.ok else 1
    if not args.output:
        raise UserError("-o/--output FILE.plan is required (or pass --check-only)")
    try:
        plan = ensure_engine(onnx, args.output, precision="fp16" if args.fp16 else "fp32", window_s=args.window,
                             min_window_s=args.min_window, max_window_s=args.max_window, max_batch=args.max_batch,
                             opt_batch=args.opt_batch, cache_dir=args.cache_dir, rebuild=args.rebuild)
    except (ModelFileError, ValueError) as e:  # ModelFileError is a ValueError: bad input file or options
        raise UserError(str(e)) from None
    print(plan)
    return 0
