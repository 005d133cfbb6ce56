"""Parameter-efficient fine-tuning: freeze the backbone, train adapters (and chosen norms) and the head.

Example:
    >>> from models import create_model, peft
    >>> model = create_model("ast_test", adapter="aat")
    >>> stats = peft.prepare(model, "aat")
    >>> 0.0 < stats["fraction"] < 1.0
    True
"""
from __future__ import annotations

import torch.nn as nn

from models.layers.adapters import BottleneckAdapter, LoAAAdapter

__all__ = ["prepare", "count_parameters", "METHODS"]

METHODS = ("aat", "loaa", "linear", "full")
_ADAPTER_TYPES = (BottleneckAdapter, LoAAAdapter)
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def count_parameters(model: nn.Module) -> dict[str, float]:
    """``{'trainable': int, 'total': int, 'fraction': trainable / total}``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def _head_modules(model: nn.Module) -> list[nn.Module]:
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return list(head) if isinstance(head, (list, tuple)) else [head]
    return [model.head]


def prepare(model: nn.Module, method: str, train_norms: bool = False) -> dict[str, float]:
    """Set ``requires_grad`` for a fine-tuning method and report the counts.

    Args:
        model: a model built with the matching adapter (``adapter='aat'`` for ``method='aat'`` ...).
        method: ``'aat'`` or ``'loaa'`` (adapters + head), ``'linear'`` (head only), ``'full'`` (everything).
        train_norms: also train every LayerNorm / normalisation layer of the backbone.

    Returns:
        ``{'trainable': int, 'total': int, 'fraction': float}``.

    Raises:
        ValueError: unknown method, or an adapter method on a model without those adapters.
    """
    if method not in METHODS:
        raise ValueError(f"unknown fine-tuning method {method!r}; accepted: {', '.join(METHODS)}")
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return count_parameters(model)
    adapters = [m for m in model.modules() if isinstance(m, _ADAPTER_TYPES)]
    if method in ("aat", "loaa"):
        if getattr(model, "adapter", None) != method or not adapters:
            raise ValueError(f"method {method!r} needs a model built with adapter={method!r}, "
                             f"got adapter={getattr(model, 'adapter', None)!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Module] = _head_modules(model)
    if method in ("aat", "loaa"):
        trainable += adapters
    if train_norms:
        trainable += [m for m in model.modules() if isinstance(m, _NORM_TYPES)]
    for m in trainable:
        for p in m.parameters():
            p.requires_grad_(True)
    return count_parameters(model)
