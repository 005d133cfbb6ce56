"""``aed export``: export a model to ONNX (opset 17, config in metadata ``aed_config``); needs the torch extra."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from apps.errors import UserError

__all__ = ["register", "run", "verify_export"]

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
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17; see ARCHITECTURE.md)")
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
        log.warning("opset %d: ARCHITECTURE.md asks for 17 (GridSample 'linear' at >= 20 breaks TensorRT)", args.opset)
    model, config = _load(args.model)
    model.eval()
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        kwargs = {}
        if config is not None:
            from realtime.config import FrontEndConfig, WindowConfig
            kwargs = {"labels": config.get("labels"), "thresholds": config.get("thresholds"),
                      "training": config.get("training"),
                      "frontend": FrontEndConfig.from_dict(config["frontend"]) if "frontend" in config else None,
                      "window": WindowConfig.from_dict(config["window"]) if "window" in config else None}
        models.save(model, ckpt, **kwargs)
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
            print(f"verify {tag}: {verify_export(model, path)}")
    return 0


def verify_export(model, path: Path) -> str:
    """Max |torch - onnxruntime| on a random window at the configured length and at the model's bounds."""
    import numpy as np
    import torch

    from engines.ort_engine import OnnxRuntimeEngine
    from engines.trt_build import seconds_to_frames

    with OnnxRuntimeEngine(path) as eng:
        spec = eng.spec
        shift = float(eng.config.get("frontend", {}).get("frame_shift_ms", 10.0))
        t_cfg = seconds_to_frames(float(eng.config.get("window", {}).get("window_s", 1.0)), shift)
        lengths = sorted({spec.t_min, min(max(t_cfg, spec.t_min), spec.t_max)})
        rng = np.random.default_rng(0)
        worst = 0.0
        for t in lengths:
            x = rng.standard_normal((2, t, spec.num_mel_bins)).astype(np.float32)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).float().numpy()
            worst = max(worst, float(np.abs(eng.infer(x) - ref).max()))
    return f"max |torch - onnxruntime| = {worst:.2e} at T = {lengths} frames"
