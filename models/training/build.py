"""The model of a training run: built from the registry, or rebuilt from an ``--init`` checkpoint through
:func:`models.io.load` with an explicit list of the tensors allowed to be fresh; ``--model-arg`` keywords checked
against the constructor's signature.

Example:
    >>> check_model_kwargs("datar_test", {"dims": (8, 16, 16, 32)})
    >>> try:
    ...     check_model_kwargs("datar_test", {"nonsense": 1})
    ... except ConfigError as e:
    ...     print(str(e).split(";")[0])
    model 'datar_test' takes no argument 'nonsense' (--model-arg)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn as nn

from models.registry import model_parameters
from realtime.config import ModelConfig
from realtime.errors import ConfigError

if TYPE_CHECKING:
    from .loop import TrainConfig

__all__ = ["HEAD_PREFIXES", "read_init_config", "model_parameters", "check_model_kwargs", "build_model"]

log = logging.getLogger(__name__)


#: Where a model keeps its classifier: the tensors that start fresh when ``--init`` retargets to another label set.
HEAD_PREFIXES = ("head.", "frame_head.", "classifier.5.")


def read_init_config(init: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of the checkpoint directory ``init`` (``--init``), checked before any data is decoded.

    Raises:
        FileNotFoundError: ``init`` is not a directory holding ``config.json`` and ``model.safetensors``.
        ModelFileError: its ``config.json`` is not valid JSON or not a model config.
        ConfigError: it names no registered model.
    """
    import models
    from models.io import read_config

    d = Path(init)
    accepted = "accepted: a model directory holding config.json and model.safetensors, such as OUT/best of aed train"
    if not d.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {d} to start from (--init); {accepted}")
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"no {name} in the checkpoint directory {d} (--init); {accepted}")
    config = read_config(d)
    if not models.is_model(config.name):
        raise ConfigError(f"{d / 'config.json'}: names no registered model (name {config.name!r}); known models: "
                          f"{', '.join(models.list_models())}")
    return config


def check_model_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Every key of ``kwargs`` (``--model-arg``) is a constructor argument of model ``name``.

    Raises:
        ConfigError: an unknown keyword, naming the accepted ones.
    """
    accepted = model_parameters(name)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} takes no argument {', '.join(map(repr, unknown))} (--model-arg); "
                          f"accepted: {', '.join(sorted(accepted))}")


def _adapter_prefixes(name: str, kwargs: Mapping[str, Any]) -> list[str]:
    """The names of the adapter modules that ``create_model(name, **kwargs)`` builds, each as ``"<module>."``.

    The model is built on the meta device where it can be (no memory, no initialisation, just the names).
    """
    import models
    from models.layers.adapters import ADAPTER_TYPES

    try:
        with torch.device("meta"):
            probe = models.create_model(name, **kwargs)
    except NotImplementedError:     # a constructor that reads a tensor's values (e.g. drop-path rates): build it
        probe = models.create_model(name, **kwargs)
    return [f"{n}." for n, m in probe.named_modules() if isinstance(m, ADAPTER_TYPES)]


def build_model(cfg: TrainConfig, labels: list[str]) -> nn.Module:
    """Create the model, or rebuild ``cfg.init`` (with adapters for ``--peft``), and prepare PEFT when asked.

    From a checkpoint (:func:`models.io.load`), the only tensors allowed to be fresh are listed explicitly: the new
    adapters' (zero-initialised, so the backbone's output is unchanged) and, when the label set differs, the heads
    (:data:`HEAD_PREFIXES`), which start fresh; every other tensor must load exactly.

    Raises:
        ConfigError: a ``cfg.model_kwargs`` key the model does not take.
        ModelFileError: the checkpoint's weights do not fit.
    """
    import models

    kw = {"num_classes": len(labels), "output_activation": cfg.output_activation, **cfg.model_kwargs}
    if cfg.peft in ("aat", "loaa"):
        kw.setdefault("adapter", cfg.peft)
    if not cfg.init:
        check_model_kwargs(cfg.model, cfg.model_kwargs)
        model = models.create_model(cfg.model, **kw)
    else:
        init = read_init_config(cfg.init)
        check_model_kwargs(init.name, cfg.model_kwargs)
        same_labels = list(init.labels) == list(labels)
        fresh = [] if same_labels else list(HEAD_PREFIXES)
        if kw.get("adapter") and init.kwargs.get("adapter") != kw["adapter"]:
            fresh += _adapter_prefixes(init.name, {**init.kwargs, **kw})
        model, _ = models.load(cfg.init, fresh=tuple(fresh), **kw)
        if not same_labels and len(init.labels) == len(labels):
            model.reset_classifier(len(labels))    # the heads fit in shape but belong to other labels
    if cfg.peft:
        import models.peft

        info = models.peft.prepare(model, cfg.peft)
        log.info("PEFT %s: %d of %d parameters trainable (%.1f %%)", cfg.peft, info["trainable"], info["total"],
                 100 * info["fraction"])
    return model
