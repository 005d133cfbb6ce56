"""``aed import-checkpoint``: an EfficientAT ``.pt`` checkpoint -> an aed checkpoint directory with its ONNX export.

The ``.pt`` file is read by :func:`models.load_efficientat_checkpoint` (``weights_only``, strict), saved as
``config.json`` + ``model.safetensors`` with EfficientAT's front end, and exported to ``model.onnx`` with that
same config in its metadata, so that every engine (torch, onnxruntime, tensorrt) can open the directory.

Example:
    aed import-checkpoint ../shared/models/efficientat/mn04_as_mAP_432.pt -o models/mn04_as
"""
from __future__ import annotations

import argparse
from pathlib import Path

from apps.errors import UserError

__all__ = ["register", "run"]

CONFIG_FILE = "config.json"


def register(sub) -> None:
    p = sub.add_parser("import-checkpoint", help="import an EfficientAT .pt checkpoint as an aed checkpoint",
                       description="Read an EfficientAT MobileNet state dict (e.g. mn04_as_mAP_432.pt; weights only, "
                                   "no pickled code is run) and write an aed checkpoint directory: config.json, "
                                   "model.safetensors and model.onnx. The AudioSet labels are read from "
                                   "audioset_class_labels_indices.csv beside the file.")
    p.add_argument("checkpoint", metavar="FILE", help="EfficientAT .pt state dict")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="replace the 527-class AudioSet output layer by a fresh one with N outputs "
                        "(every other tensor is loaded)")
    p.add_argument("--force", action="store_true", help="overwrite a checkpoint already in DIR")
    p.set_defaults(func=run)


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"-o must name a directory, but {str(out)!r} is a file")
    if (out / CONFIG_FILE).is_file() and not force:
        raise UserError(f"{str(out)!r} already holds a checkpoint ({CONFIG_FILE}); pass --force to overwrite it")


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401

        import models
        from models.efficientat import CheckpointError
    except ImportError as e:
        from engines.base import missing_dependency
        raise missing_dependency("torch", "aed import-checkpoint", e) from e
    from realtime.config import WindowConfig

    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be a positive number of classes, got {args.num_classes}")
    out = Path(args.output)
    _check_output(out, args.force)
    try:
        model = models.load_efficientat_checkpoint(args.checkpoint, num_classes=args.num_classes)
    except (CheckpointError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    models.save(model, out, labels=model.labels, frontend=model.frontend, window=WindowConfig(1.0, 0.1),
                training={"pretrained_from": model.pretrained_from})
    config = models.io.read_config(out)
    onnx_path = models.export_onnx(model, out / "model.onnx", config)
    fe = model.frontend
    print(f"wrote {out}: {CONFIG_FILE}, model.safetensors, {onnx_path.name} ({config.name}, {model.num_classes} "
          f"classes, {fe.kind} front end at {fe.sample_rate} Hz, from {Path(args.checkpoint).name})")
    return 0
