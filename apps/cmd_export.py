"""``aed export``: export a model to ONNX (opset 17, config in metadata ``aed_config``); needs the torch extra."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from apps.errors import UserError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (and optionally INT8)",
                       description="Export a checkpoint, or a registry variant with fresh (untrained) weights, to "
                                   "ONNX with dynamic batch and time. The export is checked against PyTorch with "
                                   "ONNX Runtime.")
    p.add_argument("model", metavar="MODEL", help="checkpoint directory, or a registry name (see 'aed models')")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="ONNX file to write")
    p.add_argument("--int8", action="store_true", help="also write <stem>.int8.onnx (dynamic INT8 quantisation)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="also save the exported weights as a checkpoint (config.json + model.safetensors) in DIR; "
                        "useful with a registry name, so that torch and ONNX engines share the same weights")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17; see docs/ARCHITECTURE.md)")
    p.add_argument("--no-verify", action="store_true", help="skip the PyTorch vs ONNX Runtime comparison")
    p.set_defaults(func=run)


def _load(name_or_dir: str):
    from models import create_model, is_model, load

    path = Path(name_or_dir)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{str(path)!r} is not a checkpoint directory (no config.json)")
        return load(path)
    if is_model(name_or_dir):
        log.warning("exporting %s with fresh, untrained weights", name_or_dir)
        return create_model(name_or_dir).eval(), None
    raise UserError(f"MODEL {name_or_dir!r} is neither a checkpoint directory nor a registered model "
                    "(list them with: aed models)")


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
        import models
    except ImportError as e:
        from engines.base import missing_dependency
        raise missing_dependency("torch", "aed export", e) from e
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"-o must name an .onnx file, got {str(out)!r}")
    if args.opset != 17:
        log.warning("opset %d: docs/ARCHITECTURE.md asks for 17 (GridSample 'linear' at >= 20 breaks TensorRT)",
                    args.opset)
    model, config = _load(args.model)
    model.eval()
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        if config is not None:
            models.io.save_with_config(model, ckpt, config)
        else:
            models.save(model, ckpt)
        model, config = models.load(ckpt)
        print(f"checkpoint: {ckpt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    models.export_onnx(model, out, config=config, opset=args.opset)
    print(f"onnx: {out}")
    outputs = [(out, "fp32")]
    if args.int8:
        from engines.quantize import quantize_int8
        q = out.with_name(out.stem + ".int8.onnx")
        quantize_int8(out, q)
        outputs.append((q, "int8"))
        print(f"onnx int8: {q}")
    if not args.no_verify:
        for path, tag in outputs:
            print(f"verify {tag}: {models.io.verify_export(model, path)}")
    return 0
