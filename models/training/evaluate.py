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

from realtime.config import FrontEndConfig
from realtime.frontend import silence_frame
from realtime.windows import clip_window_ends

from .metrics import accuracy, confusion_matrix, mean_average_precision, per_class_table

__all__ = ["clip_windows", "clip_scores", "clip_metrics", "write_clip_report", "plot_confusion"]


def clip_windows(f: torch.Tensor, win: int, hop: int, fe: FrontEndConfig) -> torch.Tensor:
    """The windows ``(W, win, F)`` that tag a clip of normalised log-mel ``f`` ``(frames, F)``.

    The runtime's rule (:func:`realtime.windows.clip_window_ends`, as in :meth:`realtime.Detector.clip_scores`): every
    full window the streaming scheduler emits; a clip shorter than one window is one window, padded before its
    start with the front end's digital silence (:func:`realtime.frontend.silence_frame`).

    Raises:
        ValueError: the clip has no frames.
    """
    n = f.shape[0]
    ends = clip_window_ends(n, win, hop)
    if not ends:
        raise ValueError("a clip with no frames has no windows to score; accepted: at least one frame")
    if n < win:
        floor = torch.from_numpy(silence_frame(fe)).to(dtype=f.dtype, device=f.device)     # (F,)
        f = torch.cat([floor[None, :].expand(win - n, -1), f])                              # (win, F)
        ends = [win]
    return torch.stack([f[e - win:e] for e in ends])                                        # (W, win, F)


@torch.no_grad()
def clip_scores(model: nn.Module, feats: Sequence[torch.Tensor], win: int, hop: int, fe: FrontEndConfig,
                device: torch.device | str = "cpu", batch_size: int = 128, return_log: bool = False):
    """Scores ``(N, C)``: each clip's window scores (model activation applied) averaged over its windows.

    The windows are :func:`clip_windows`, so that a validation number during training is the number
    ``aed evaluate`` prints for the same model and clips.

    Args:
        model: an aed model (``forward`` gives scores in [0, 1]).
        feats: normalised log-mel ``(frames, F)`` per clip.
        win: window length in frames.
        hop: hop between windows in frames.
        fe: the front end of the features (its digital silence pads short clips).
        device: where to run.
        batch_size: windows per forward pass.
        return_log: also return ``log(scores)`` (for a validation loss).
    """
    was_training = model.training
    model.eval()
    per_clip = [clip_windows(f, win, hop, fe) for f in feats]
    counts = [len(w) for w in per_clip]
    allw = torch.cat(per_clip) if per_clip else torch.zeros(0, win, fe.num_mel_bins)
    outs = []
    for i in range(0, len(allw), batch_size):
        outs.append(model(allw[i:i + batch_size].to(device)).float().cpu())
    model.train(was_training)
    scores = torch.cat(outs) if outs else torch.zeros(0, 0)
    # mean in float64, as the runtime's Detector.stream_tags sums its window scores
    clip = (torch.stack([s.double().mean(0) for s in torch.split(scores, counts)]).float().numpy() if counts
            else np.zeros((0, 0)))
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
