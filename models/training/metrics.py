"""Clip-level metrics in plain NumPy: accuracy, average precision, mAP, confusion matrix."""
from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "average_precision", "mean_average_precision", "confusion_matrix", "per_class_table"]


def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy of ``scores (N, C)`` against class indices ``targets (N,)``."""
    if len(targets) == 0:
        return float("nan")
    return float(np.mean(np.argmax(scores, axis=1) == targets))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision of one class: ``scores (N,)``, boolean ``positives (N,)``; NaN with no positive."""
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    precision_at_k = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at_k * hits).sum() / n_pos)


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Macro mAP over classes that have a positive; returns ``(mAP, per-class AP (C,))``."""
    c = scores.shape[1]
    ap = np.array([average_precision(scores[:, k], targets == k) for k in range(c)])
    return (float(np.nanmean(ap)) if np.any(np.isfinite(ap)) else float("nan")), ap


def confusion_matrix(pred: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(C, C)``: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (targets, pred), 1)
    return cm


def per_class_table(scores: np.ndarray, targets: np.ndarray, labels: list[str]) -> list[dict]:
    """One row per class: support, recall (accuracy on that class), precision and AP."""
    pred = np.argmax(scores, axis=1)
    _, ap = mean_average_precision(scores, targets)
    rows = []
    for k, name in enumerate(labels):
        support = int((targets == k).sum())
        predicted = int((pred == k).sum())
        tp = int(((pred == k) & (targets == k)).sum())
        rows.append({"label": name, "support": support,
                     "recall": tp / support if support else float("nan"),
                     "precision": tp / predicted if predicted else float("nan"),
                     "ap": float(ap[k])})
    return rows
