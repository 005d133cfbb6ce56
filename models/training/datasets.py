"""From a :class:`~models.training.loop.TrainConfig` to cached training and validation features."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from realtime.config import FrontEndConfig, seconds_to_frames
from realtime.errors import AudioError, ConfigError

from .data import (AUDIO_EXTENSIONS, ClipDataset, ClipItem, decode_items, load_dcase, load_esc50, load_folder,
                   read_audio_at)
from .features import cached_features, features_or_skip

__all__ = ["TrainData", "load_train_data", "load_split", "load_noise_features", "train_labels"]

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """Normalised log-mel features of the training and validation clips, plus background noise."""

    labels: list[str]
    frontend: FrontEndConfig
    train_feats: list[torch.Tensor]
    train_labels: list[int]
    val_feats: list[torch.Tensor] = field(default_factory=list)
    val_labels: list[int] = field(default_factory=list)
    noise_feats: list[torch.Tensor] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    val_items: list[ClipItem] = field(default_factory=list)


def _features(ds: ClipDataset, fe: FrontEndConfig, cache_dir: str | None, skipped: list[str]
              ) -> tuple[list[torch.Tensor], list[int], list[ClipItem]]:
    """Features of the clips of ``ds`` that decode and are long enough to score; the others go into ``skipped``."""
    def decode():
        waves, kept, _ = decode_items(ds.items, fe.sample_rate)
        keep = {id(k) for k in kept}
        return waves, [i for i, it in enumerate(ds.items) if id(it) in keep]

    paths = [str(it.path) for it in ds.items]
    feats, kept = cached_features(paths, decode, fe, cache_dir)
    kept_set = set(kept)
    skipped.extend(p for i, p in enumerate(paths) if i not in kept_set)  # the same on a cache hit as on a miss
    items = [ds.items[i] for i in kept]
    return feats, [it.label for it in items], items


def load_split(layout: str, data: str, folds: list[int] | None, licenses: list[str] | None,
               labels: list[str] | None = None) -> ClipDataset:
    """One split of a dataset in the ``esc50``, ``folder`` or ``dcase`` layout (see :mod:`.data`)."""
    if layout == "esc50":
        return load_esc50(data, folds=folds, licenses=licenses)
    if layout == "folder":
        return load_folder(data, labels=labels)
    if layout == "dcase":
        ds, _ = load_dcase(Path(data) / "audio", Path(data) / "labels.tsv", labels=labels)
        return ds
    raise ConfigError(f"unknown data layout {layout!r}; accepted: esc50, folder, dcase")


def _dcase_segments(data: str, fe: FrontEndConfig, labels: list[str] | None, skipped: list[str]
                    ) -> tuple[list[torch.Tensor], list[int], list[str]]:
    """Strong labels as training clips: each event's span (at least 0.5 s) cut from its soundscape."""
    ds, rows = load_dcase(Path(data) / "audio", Path(data) / "labels.tsv", labels=labels)
    index = {n: i for i, n in enumerate(ds.labels)}
    waves, kept, report = decode_items(ds.items, fe.sample_rate)
    skipped.extend(report.skipped)
    computed, ok = features_or_skip(waves, [str(it.path) for it in kept], fe)
    ok_set = set(ok)
    skipped.extend(str(it.path) for i, it in enumerate(kept) if i not in ok_set)
    feats = dict(zip([kept[i].path.name for i in ok], computed))
    out, labs = [], []
    for r in rows:
        f = feats.get(r.filename)
        if f is None:
            continue
        a = seconds_to_frames(r.onset, fe) if r.onset > 0 else 0        # the event's first frame
        b = min(len(f), a + seconds_to_frames(max(0.5, r.offset - r.onset), fe))
        out.append(f[a:b])
        labs.append(index[r.event_label])
    return out, labs, ds.labels


def train_labels(cfg: Any) -> list[str]:
    """The label names a run of ``cfg`` (a TrainConfig) trains on, read from the metadata without decoding audio.

    They are the labels :func:`load_train_data` returns for the same settings.
    """
    if cfg.layout == "dcase":
        return load_dcase(Path(cfg.data) / "audio", Path(cfg.data) / "labels.tsv")[0].labels
    return load_split(cfg.layout, cfg.data, cfg.train_folds, cfg.licenses).labels


def load_noise_features(noise_dir: str | None, fe: FrontEndConfig) -> list[torch.Tensor]:
    """Features of the background recordings in ``noise_dir`` (none when absent)."""
    if not noise_dir or not Path(noise_dir).is_dir():
        return []
    files = sorted(p for p in Path(noise_dir).iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    waves, names = [], []
    for p in files:
        try:
            waves.append(read_audio_at(p, fe.sample_rate))
        except (AudioError, FileNotFoundError) as e:
            log.warning("skipping unreadable noise file %s (%s)", p.name, e)
            continue
        names.append(str(p))
    return features_or_skip(waves, names, fe)[0]


def load_train_data(cfg: Any, num_mel_bins: int | None = None) -> TrainData:
    """Decode (or read from the cache) the training and validation clips of ``cfg`` (a TrainConfig)."""
    fe = FrontEndConfig(num_mel_bins=num_mel_bins or 128)
    skipped: list[str] = []
    if cfg.layout == "dcase":
        tr_f, tr_l, labels = _dcase_segments(cfg.data, fe, None, skipped)
        va_f, va_l, va_items = [], [], []
        if cfg.val_data:
            va_f, va_l, _ = _dcase_segments(cfg.val_data, fe, labels, skipped)
    else:
        train = load_split(cfg.layout, cfg.data, cfg.train_folds, cfg.licenses)
        labels = train.labels
        if not train.items:
            raise ConfigError(f"no training clips in {cfg.data} (layout {cfg.layout}, folds {cfg.train_folds}, "
                              f"licences {cfg.licenses})")
        tr_f, tr_l, _ = _features(train, fe, cfg.cache_dir, skipped)
        va_f, va_l, va_items = [], [], []
        if cfg.layout == "esc50" and cfg.val_folds:
            val = load_split("esc50", cfg.data, cfg.val_folds, cfg.licenses)
            va_f, va_l, va_items = _features(val, fe, cfg.cache_dir, skipped)
        elif cfg.val_data:
            val = load_split(cfg.layout, cfg.val_data, None, cfg.licenses, labels=labels)
            va_f, va_l, va_items = _features(val, fe, cfg.cache_dir, skipped)
    if not tr_f:
        raise AudioError(f"no readable training clips in {cfg.data} ({len(skipped)} file(s) skipped: unreadable or "
                         f"too short to score)")
    if skipped:
        log.warning("%d file(s) skipped (unreadable or too short to score): %s%s", len(skipped),
                    ", ".join(Path(p).name for p in skipped[:5]), ", ..." if len(skipped) > 5 else "")
    log.info("training clips: %d, validation clips: %d, skipped files: %d", len(tr_f), len(va_f), len(skipped))
    return TrainData(labels, fe, tr_f, tr_l, va_f, va_l, load_noise_features(cfg.noise_dir, fe), skipped, va_items)
