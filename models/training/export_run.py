"""Export a training run's checkpoint to ONNX beside it (``model.onnx``), checked against PyTorch.

Usage: python -m models.training.export_run runs/sel_mn04/final [DEST]
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def export_checkpoint(src: str | Path, dst: str | Path | None = None) -> Path:
    """Copy ``src`` (config.json + model.safetensors) to ``dst`` (default: ``src``) and write ``model.onnx``."""
    import numpy as np
    import torch

    import models

    src = Path(src)
    dst = Path(dst) if dst is not None else src
    if dst != src:
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(src / name, dst / name)
    model, config = models.load(dst)
    models.export_onnx(model.eval(), dst / "model.onnx", config)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(dst / "model.onnx"), providers=["CPUExecutionProvider"])
    for t in (50, 100, 300):
        x = torch.randn(2, t, model.num_mel_bins)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(["scores"], {"fbank": x.numpy()})[0]
        if not np.allclose(ref, got, atol=1e-4):
            raise RuntimeError(f"ONNX export differs from PyTorch at T={t}: max {np.abs(ref - got).max():.2e}")
    return dst


if __name__ == "__main__":
    print(export_checkpoint(*sys.argv[1:3]))
