"""Parameter-efficient fine-tuning: freeze the backbone, train adapters and the head.

Methods (``--peft``):

- ``head``: the classifier only (``linear`` is accepted as its older name);
- ``aat``: Audio Adapter Tuning's adapters (a bottleneck in parallel with each MLP and a spatial adapter after each
  attention or deformable attention) and the head;
- ``loaa``: look-aside convolution adapters (``1 x 3`` along time, ``3 x 1`` along frequency) in parallel with
  blocks of a CNN stem and of the attention stages, and the head;
- ``full``: every parameter.

A model family says which methods it takes (``peft_methods``); asking for another is a one-line
:class:`~realtime.errors.ConfigError` that names the accepted ones. The adapter methods need the model built with
the matching ``adapter=`` keyword (every adapter starts at zero, so the backbone's output is unchanged).

Frozen means bit for bit: :func:`train_mode` keeps the normalisation layers of frozen parts in eval mode (a
BatchNorm's running statistics are buffers that ``model.train()`` would otherwise update), and
:func:`trainable_state_names` is what an EMA or a small checkpoint should hold.

Example:
    >>> from models import create_model, peft
    >>> model = create_model("ast_test", adapter="aat")
    >>> stats = peft.prepare(model, "aat")
    >>> 0.0 < stats["fraction"] < 1.0
    True
"""
from __future__ import annotations

import torch.nn as nn

from models.layers.adapters import ADAPTER_TYPES
from realtime.errors import ConfigError

__all__ = ["prepare", "count_parameters", "methods_of", "check_method", "train_mode", "trainable_state_names",
           "METHODS"]

METHODS = ("head", "aat", "loaa", "full")
_ALIASES = {"linear": "head"}
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
_STATS_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def count_parameters(model: nn.Module) -> dict[str, float]:
    """``{'trainable': int, 'total': int, 'fraction': trainable / total}``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}


def methods_of(model_or_class) -> tuple[str, ...]:
    """The fine-tuning methods a model (or model class) takes; ``head`` and ``full`` where it declares none."""
    return tuple(getattr(model_or_class, "peft_methods", ("head", "full")))


def check_method(method: str, model_or_class, name: str | None = None) -> str:
    """``method`` in canonical form, or a ConfigError naming what this family takes."""
    method = _ALIASES.get(method, method)
    if method not in METHODS:
        raise ConfigError(f"unknown fine-tuning method {method!r}; accepted: {', '.join(METHODS)}")
    accepted = methods_of(model_or_class)
    if method not in accepted:
        who = name or getattr(model_or_class, "model_name", None) or getattr(model_or_class, "__name__", None) \
            or type(model_or_class).__name__
        raise ConfigError(f"model {who!r} cannot take --peft {method}; it takes: {', '.join(accepted)}")
    return method


def _head_modules(model: nn.Module) -> list[nn.Module]:
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return list(head) if isinstance(head, (list, tuple)) else [head]
    return [model.head]


def prepare(model: nn.Module, method: str, train_norms: bool = False) -> dict[str, float]:
    """Set ``requires_grad`` for a fine-tuning method and report the counts.

    Args:
        model: a model built with the matching adapter (``adapter='aat'`` for ``method='aat'`` ...).
        method: ``'head'``, ``'aat'``, ``'loaa'`` or ``'full'`` (see the module's docstring).
        train_norms: also train every normalisation layer of the backbone.

    Returns:
        ``{'trainable': int, 'total': int, 'fraction': float}``.

    Raises:
        ConfigError: unknown method, a method the family does not take, or an adapter method on a model built
            without those adapters.
    """
    method = check_method(method, model)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return count_parameters(model)
    adapters = [m for m in model.modules() if isinstance(m, ADAPTER_TYPES)]
    if method in ("aat", "loaa") and (getattr(model, "adapter", None) != method or not adapters):
        raise ConfigError(f"method {method!r} needs a model built with adapter={method!r}, "
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


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except that normalisation layers with frozen parameters stay in eval mode, so that their
    running statistics (buffers) do not move: a frozen backbone stays frozen bit for bit."""
    model.train()
    for m in model.modules():
        if isinstance(m, _STATS_TYPES) and not any(p.requires_grad for p in m.parameters(recurse=False)):
            m.eval()
    return model


def trainable_state_names(model: nn.Module) -> list[str]:
    """The state-dict entries that training can change: trainable parameters, and the buffers of modules that
    train (a BatchNorm whose affine parameters train)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for mod_name, m in model.named_modules():
        if any(p.requires_grad for p in m.parameters(recurse=False)):
            names += [f"{mod_name}.{b}" if mod_name else b for b, _ in m.named_buffers(recurse=False)]
    return sorted(set(names))
