"""Clip-level evaluation: window scores averaged over each clip -> accuracy, mAP, per-class table, confusion PNG.

Event-level evaluation on soundscapes through the streaming ``realtime.Detector`` lives in :mod:`.events`.

Example:
    >>> import numpy as np
    >>> clip_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]))["accuracy"]
    1.0
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from .metrics import accuracy, confusion_matrix, mean_average_precision, per_class_table

__all__ = ["window_starts", "clip_scores", "clip_metrics", "write_clip_report", "plot_confusion"]


def window_starts(n: int, win: int, hop: int) -> list[int]:
    """Starts of the windows of ``win`` frames every ``hop`` frames that cover ``n`` frames (at least one)."""
    if n <= win:
        return [0]
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:  # the tail the hop would miss
        starts.append(n - win)
    return starts


def _windows(f: torch.Tensor, win: int, hop: int) -> torch.Tensor:
    if f.shape[0] < win:  # pad short clips with their quietest level
        f = torch.cat([f, f.new_full((win - f.shape[0], f.shape[1]), float(f.min()))])
    return torch.stack([f[s:s + win] for s in window_starts(f.shape[0], win, hop)])  # (W, win, F)


@torch.no_grad()
def clip_scores(model: nn.Module, feats: Sequence[torch.Tensor], win: int, hop: int, device: torch.device | str = "cpu",
                batch_size: int = 128, return_log: bool = False):
    """Scores ``(N, C)``: each clip's window scores (model activation applied) averaged over its windows.

    Args:
        model: an aed model (``forward`` gives scores in [0, 1]).
        feats: normalised log-mel ``(frames, F)`` per clip.
        win: window length in frames.
        hop: hop between windows in frames.
        device: where to run.
        batch_size: windows per forward pass.
        return_log: also return ``log(scores)`` (for a validation loss).
    """
    was_training = model.training
    model.eval()
    per_clip = [_windows(f, win, hop) for f in feats]
    counts = [len(w) for w in per_clip]
    allw = torch.cat(per_clip) if per_clip else torch.zeros(0, win, 1)
    outs = []
    for i in range(0, len(allw), batch_size):
        outs.append(model(allw[i:i + batch_size].to(device)).float().cpu())
    model.train(was_training)
    scores = torch.cat(outs) if outs else torch.zeros(0, 0)
    clip = torch.stack([s.mean(0) for s in torch.split(scores, counts)]).numpy() if counts else np.zeros((0, 0))
    if return_log:
        return clip, np.log(np.clip(clip, 1e-12, None))
    return clip


def clip_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy and macro mAP."""
    m, _ = mean_average_precision(scores, targets)
    return {"accuracy": accuracy(scores, targets), "map": m}


def plot_confusion(cm: np.ndarray, labels: list[str], path: str | Path) -> None:
    """Confusion matrix as a PNG (rows: true class, columns: predicted), normalised per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(rows, 1)
    size = max(6.0, 0.22 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_clip_report(scores: np.ndarray, targets: np.ndarray, labels: list[str], out: str | Path,
                      extra: dict | None = None) -> dict:
    """Write ``clip_metrics.json``, ``per_class.csv`` and ``confusion.png`` into ``out``; return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {**clip_metrics(scores, targets), "clips": int(len(targets)), **(extra or {})}
    table = per_class_table(scores, targets, labels)
    with open(out / "per_class.csv", "w") as f:
        f.write("label,support,recall,precision,ap\n")
        for r in table:
            f.write(f"{r['label']},{r['support']},{r['recall']:.4f},{r['precision']:.4f},{r['ap']:.4f}\n")
    cm = confusion_matrix(np.argmax(scores, axis=1), targets, len(labels))
    plot_confusion(cm, labels, out / "confusion.png")
    (out / "clip_metrics.json").write_text(json.dumps({**summary, "per_class": table}, indent=1))
    return summary
