"""Loading EfficientAT's pretrained MobileNet checkpoints (``mn04_as`` and its kin) into :mod:`models.mobilenet`.

The ``.pt`` file is a PyTorch zip state dict. It is read with ``torch.load(weights_only=True)``, which refuses
any pickled code, and loaded strictly: every tensor must have its place and shape. The 527 AudioSet labels
come from ``audioset_class_labels_indices.csv`` beside the checkpoint.

Credit: F. Schmid, K. Koutini, G. Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge
Distillation", ICASSP 2023; models released under the MIT licence (repository ``fschmid56/EfficientAT``).

Example:
    >>> model = load_efficientat_checkpoint("../shared/models/efficientat/mn04_as_mAP_432.pt")  # doctest: +SKIP
    >>> len(model.labels)  # doctest: +SKIP
    527
"""
from __future__ import annotations

import csv
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from models.mobilenet import MobileNetAudio, make_divisible
from models.registry import create_model
from realtime.config import efficientat_frontend
from realtime.errors import AedError

__all__ = ["load_efficientat_checkpoint", "read_efficientat_state", "efficientat_labels", "LABELS_CSV",
           "CheckpointError", "EFFICIENTAT_CREDIT"]

log = logging.getLogger(__name__)

LABELS_CSV = "audioset_class_labels_indices.csv"
EFFICIENTAT_CREDIT = ("EfficientAT mn04_as (F. Schmid, K. Koutini, G. Widmer, ICASSP 2023, arXiv 2211.04772; "
                      "MIT licence, Copyright (c) Florian Schmid)")
_LAYOUT = ("a PyTorch state dict (a zip .pt file of name -> tensor, as EfficientAT releases them: features.N..., "
           "classifier.2, classifier.5)")


class CheckpointError(AedError, ValueError):
    """A checkpoint file that is not what it should be; the message is one line naming the expected layout."""


def read_efficientat_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an EfficientAT ``.pt`` state dict safely (``weights_only=True``: no code is ever unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(path)!r}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith(("Trying to load", "Unsupported"))), None)
        if why is not None:  # a pickle that names code or classes: refused, nothing was run
            raise CheckpointError(f"{path.name}: refused to unpickle: {why[:160]}; expected {_LAYOUT}") from e
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({(lines or ['bad pickle'])[0][:100]}); "
                              f"expected {_LAYOUT}") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            struct.error) as e:
        raise CheckpointError(f"{path.name}: cannot read it as a PyTorch checkpoint "
                              f"({type(e).__name__}: {str(e).strip()[:120]}); expected {_LAYOUT}") from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path.name}: not a state dict (got {type(state).__name__}); expected {_LAYOUT}")
    return dict(state)


def efficientat_labels(csv_path: str | os.PathLike) -> list[str]:
    """The ``display_name`` column of AudioSet's ``class_labels_indices.csv``, in index order."""
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f)):
            if "index" not in r or "display_name" not in r:
                raise CheckpointError(f"{csv_path}: expected columns index,mid,display_name")
            if not str(r["index"]).strip().isdigit() or int(r["index"]) != i:
                raise CheckpointError(f"{csv_path}: row {i + 2} has index {r['index']!r}, expected {i}")
            rows.append(r["display_name"])
    return rows


def _width_of(state: Mapping[str, torch.Tensor]) -> float | None:
    """The width multiplier a state dict was built with, from its first conv's channels (None if unknown)."""
    w, last = state.get("features.0.0.weight"), state.get("features.16.0.weight")
    if w is None or last is None or w.dim() != 4 or last.dim() != 4:
        return None
    for m in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0):
        if make_divisible(16 * m) == w.shape[0] and make_divisible(160 * m) * 6 == last.shape[0]:
            return m
    return None


def load_efficientat_checkpoint(path: str | os.PathLike, num_classes: int | None = None, name: str = "mn04",
                                labels_csv: str | os.PathLike | None = None, **kwargs: Any) -> MobileNetAudio:
    """Build ``name`` (default ``mn04``) holding the weights of an EfficientAT MobileNet checkpoint.

    Args:
        path: the ``.pt`` file.
        num_classes: None keeps the 527-class AudioSet head; a number loads every tensor but the last
            classifier layer, which starts fresh with that many outputs.
        name: registered MobileNet variant whose shape the checkpoint must have.
        labels_csv: AudioSet label list; default the CSV beside the checkpoint (``audioset_class_labels_indices.csv``).
        **kwargs: more constructor arguments (``t_min``, ``t_max``, ``dropout``...).

    Returns:
        The model in eval mode with ``model.labels`` (AudioSet names when the head is kept) and
        ``model.frontend`` (the EfficientAT front end at 16 kHz).

    Raises:
        CheckpointError: not a state dict, unsafe pickle, missing or unexpected keys, shapes of another width.
    """
    path = Path(path)
    state = read_efficientat_state(path)
    model = create_model(name, **kwargs)
    if not isinstance(model, MobileNetAudio):
        raise CheckpointError(f"{name!r} is not a MobileNet variant; use mn04 or another mn* model")
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise CheckpointError(f"{path.name} does not fit {name}: {len(missing)} missing keys (e.g. {missing[:2]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); expected {_LAYOUT}")
    wrong = [k for k in ours if tuple(state[k].shape) != tuple(ours[k].shape)]
    if wrong:
        k = wrong[0]
        width = _width_of(state)
        hint = f"; the checkpoint looks like width {width}" if width and width != model.width_mult else ""
        raise CheckpointError(f"{path.name} does not fit {name} (width {model.width_mult}): {len(wrong)} tensors "
                              f"differ in shape, e.g. {k} {tuple(state[k].shape)} vs {tuple(ours[k].shape)}{hint}")
    model.load_state_dict(state, strict=True)
    csv_path = Path(labels_csv) if labels_csv is not None else path.parent / LABELS_CSV
    labels = efficientat_labels(csv_path) if csv_path.is_file() else None
    if labels is not None and len(labels) != model.num_classes:
        raise CheckpointError(f"{csv_path.name} lists {len(labels)} labels, the checkpoint has {model.num_classes}")
    if labels is None:
        log.warning("no %s beside %s; labels are class_0 ...", LABELS_CSV, path)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        model.model_kwargs = {**model.model_kwargs, "num_classes": num_classes}
        labels = None
    model.labels = labels or [f"class_{i}" for i in range(model.num_classes)]
    model.frontend = efficientat_frontend(16000, model.num_mel_bins)
    model.pretrained_from = {"file": path.name, "credit": EFFICIENTAT_CREDIT}
    return model.eval()
