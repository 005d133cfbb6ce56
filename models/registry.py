"""Model registry: ``@register_model`` on small variant functions, ``create_model(name, **kw)``."""
from __future__ import annotations

import fnmatch
import inspect
import typing
from typing import Callable

import torch.nn as nn
from realtime.errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_parameters", "model_class"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a variant function under its own name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def _ensure_families_loaded() -> None:
    # Importing the families registers their variants.
    import models.ast  # noqa: F401
    import models.datar  # noqa: F401
    import models.mobilenet  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    _ensure_families_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _ensure_families_loaded()
    return name in _REGISTRY


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model variant; keyword arguments override the variant's defaults.

    The returned model remembers ``name`` and the keyword arguments (``model.model_name``,
    ``model.model_kwargs``) so that :func:`models.save` can write them into the config.
    """
    _ensure_families_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    model = _REGISTRY[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def model_class(name: str) -> type | None:
    """The class a registered variant builds (its return annotation), or None where the factory does not say."""
    _ensure_families_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    try:
        target = typing.get_type_hints(_REGISTRY[name]).get("return")
    except (NameError, TypeError):
        return None
    return target if inspect.isclass(target) else None


def model_parameters(name: str) -> list[str] | None:
    """The keyword arguments the registered model ``name`` accepts (its class's constructor), or None where the
    variant does not say (a factory that returns no annotated class and takes ``**kwargs`` only)."""
    _ensure_families_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[name]
    try:
        target = typing.get_type_hints(factory).get("return")
    except (NameError, TypeError):
        target = None
    sig = inspect.signature(target if inspect.isclass(target) else factory)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in named]
