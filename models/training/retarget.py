"""Teach a trained detector new sounds from a few recordings: parameter-efficient retargeting.

``aed train --init models/pretrained/aed_default --peft head|aat|loaa|full --data DIR --layout folder`` lands here.
The base model's backbone is frozen (bit for bit: frozen BatchNorms stay in eval mode and the EMA holds only what
trains), fresh clip and frame heads are made for the folder's classes, the method's adapters are added (they start
at zero) and trained with the detection recipe of :mod:`.sed` (energy-aware and onset crops of each clip over
negatives at natural levels, SNR mixing, frame and clip BCE), so that the result still says "nothing" to silence,
noise and speech.

What gets written to ``OUT/final``:

- with ``head``, ``aat`` or ``loaa``: a small checkpoint, ``model.safetensors`` holding only the trained tensors
  and ``config.json`` naming the base by path and sha256 (:func:`models.io.save_adapter`; loading it against other
  base weights is refused); with ``full``: a complete checkpoint;
- ``model.onnx``, the whole network, which is what every command's ONNX engine runs;
- per-class thresholds from the user's own clips (:func:`example_thresholds`), stored in the config.

Few examples are the normal case. A class with a single clip is trained on and warned about; unreadable files are
skipped by name; clips shorter than the window are placed in it with silence or background around them; classes
that the base model also has are warned about (they get fresh heads like the others).

Example:
    >>> cfg = RetargetConfig(init="models/pretrained/aed_default", peft="aat", data="my_sounds")  # doctest: +SKIP
    >>> result = retarget(cfg)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from realtime.config import seconds_to_frames
from realtime.errors import AudioError, ConfigError

__all__ = ["RetargetConfig", "RetargetResult", "retarget", "example_thresholds", "DEFAULT_LR", "MIN_THRESHOLD_CLIPS"]

log = logging.getLogger(__name__)

#: peak learning rate per method (new tensors; ``full`` trains the pretrained ones at a tenth of it)
DEFAULT_LR = {"head": 3e-3, "aat": 2e-3, "loaa": 2e-3, "full": 2e-3}
#: a class needs this many example clips for a threshold of its own; fewer keep the base model's default
MIN_THRESHOLD_CLIPS = 3


@dataclass
class RetargetConfig:
    """One retargeting run (seconds at the surface).

    Attributes:
        init: the base checkpoint directory (a sigmoid detector with a frame head, e.g. the shipped default).
        peft: ``head``, ``aat``, ``loaa`` or ``full``.
        data: the training clips: a folder per class (``layout="folder"``) or an ESC-50 root (``layout="esc50"``,
            with ``classes`` and ``shots``: the benchmark protocol).
        classes: ESC-50 classes to keep (``layout="esc50"``).
        shots: clips per class drawn from the training folds (``layout="esc50"``; all when None).
        val_data: optional folder of held-out clips in the same layout: thresholds come from them when given.
        epochs: passes; an epoch is ``max(10, clips / (batch * (1 - neg_fraction)))`` steps.
        lr: peak learning rate for the new and adapter tensors (default :data:`DEFAULT_LR`).
        window_s, vary_window, min_window_s, max_window_s: training windows (1 s; 0.5-2.5 s 30 % of the time).
        adapter_kwargs: extra constructor arguments for the adapters (e.g. ``{"spatial_adapter": False}``).
        speech: synthetic speech among the negatives (``espeak-ng``; cached in ``cache_dir``).
    """

    init: str
    peft: str = "head"
    data: str | None = None
    layout: str = "folder"
    classes: list[str] | None = None
    shots: int | None = None
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    licenses: list[str] | None = field(default_factory=lambda: ["CC0", "CC-BY"])
    val_data: str | None = None
    noise_dir: str | None = "../shared/data/noise"
    cache_dir: str = "runs/cache"
    out: str = "runs/retarget"
    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 1e-4
    ema_decay: float = 0.99
    window_s: float = 1.0
    vary_window: float = 0.3
    min_window_s: float = 0.5
    max_window_s: float = 2.5
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    speech: bool = True
    seed: int = 0
    threads: int | None = 1
    export: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RetargetResult:
    """What a run produced and what it cost."""

    out: Path
    labels: list[str]
    trainable: int
    total: int
    cpu_minutes: float
    wall_minutes: float
    checkpoint_bytes: int
    thresholds: dict[str, float]
    warnings: list[str]

    @property
    def fraction(self) -> float:
        return self.trainable / max(1, self.total)

    def summary(self) -> dict[str, Any]:
        return {"out": str(self.out), "classes": len(self.labels), "trainable": self.trainable, "total": self.total,
                "trainable_percent": round(100 * self.fraction, 3), "cpu_minutes": round(self.cpu_minutes, 2),
                "wall_minutes": round(self.wall_minutes, 2), "checkpoint_bytes": self.checkpoint_bytes,
                "thresholds": self.thresholds, "warnings": self.warnings}


def _draw_shots(items: Sequence[Any], shots: int, rng: np.random.Generator) -> list[Any]:
    """``shots`` items of each label (all where a label has fewer), drawn without replacement, in dataset order."""
    by: dict[int, list] = {}
    for it in items:
        by.setdefault(it.label, []).append(it)
    out = []
    for label in sorted(by):
        pool = by[label]
        out += [pool[i] for i in sorted(rng.choice(len(pool), min(shots, len(pool)), replace=False))]
    return out


def _clips(cfg: RetargetConfig, fe: Any, warnings: list[str]
           ) -> tuple[list[np.ndarray], list[torch.Tensor], list[int], list[str]]:
    """Audio, features and labels of the training clips and the label names, with the checks the few-example
    case needs."""
    from .data import decode_items, load_esc50, load_folder
    from .sed import subset_classes
    from .sed_data import features

    if not cfg.data:
        raise ConfigError("no training data: pass --data DIR (a folder per class)")
    if cfg.layout == "folder":
        ds = load_folder(cfg.data)
    elif cfg.layout == "esc50":
        ds = subset_classes(load_esc50(cfg.data, folds=cfg.train_folds, licenses=cfg.licenses), cfg.classes)
        if cfg.shots:
            ds = replace(ds, items=_draw_shots(ds.items, cfg.shots, np.random.default_rng(cfg.seed)))
    else:
        raise ConfigError(f"retargeting reads --layout folder (a folder per class) or esc50, got {cfg.layout!r}")
    if not ds.labels:
        raise ConfigError(f"{cfg.data} has no class folders; expected {cfg.data}/<class name>/<clips>")
    waves, kept, report = decode_items(ds.items, fe.sample_rate)
    for p in report.skipped:
        warnings.append(f"skipped unreadable file {p}")
    audio, feats, labels = [], [], []
    need = fe.frame_length
    short = 0
    window = seconds_to_frames(cfg.window_s, fe)
    for w, it in zip(waves, kept):
        if len(w) < need or not np.isfinite(w).all():
            why = "not finite" if len(w) >= need else f"shorter than one frame ({need} samples)"
            warnings.append(f"skipped {it.path} ({why})")
            continue
        f = features(w, fe)
        short += int(f.shape[0] < window)
        audio.append(w)
        feats.append(f)
        labels.append(it.label)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(ds.labels))
    empty = [ds.labels[i] for i in range(len(ds.labels)) if counts[i] == 0]
    if len(empty) == len(ds.labels):
        raise AudioError(f"no usable training clips in {cfg.data} ({len(report.skipped)} unreadable); accepted: WAV, "
                         "FLAC, OGG or MP3 clips of at least 25 ms in a folder per class")
    keep = [i for i in range(len(ds.labels)) if counts[i] > 0]
    for name in empty:
        warnings.append(f"class {name!r} has no usable clip and is left out")
    remap = {old: new for new, old in enumerate(keep)}
    names = [ds.labels[i] for i in keep]
    labels = [remap[c] for c in labels]
    for i, name in enumerate(names):
        n = int(counts[keep[i]])
        if n < 2:
            warnings.append(f"class {name!r} has only {n} clip: it is trained on, but one recording rarely covers a "
                            f"sound; add more")
    if short:
        warnings.append(f"{short} clip(s) shorter than the {cfg.window_s:g} s window: each is placed in the window "
                        f"with silence or background around it")
    return audio, feats, labels, names


def retarget(cfg: RetargetConfig) -> RetargetResult:
    """Train new classes on a frozen base detector (see the module docstring); returns what it produced.

    Raises:
        FileNotFoundError: ``cfg.init`` or ``cfg.data`` is missing.
        ConfigError: a method the base's family cannot take, a base that is not a sigmoid detector with a frame
            head, or no class folders.
        AudioError: no usable clip at all.
    """
    import models
    from models import peft as peft_mod
    from models.io import build_config, export_onnx, save_adapter, save_with_config

    from .build import HEAD_PREFIXES, _adapter_prefixes, read_init_config
    from .loop import EMA, cosine_schedule
    from .sed import SedBatcher, SedConfig, detection_loss, draw_window
    from .sed_data import build_negative_bank

    t0, c0 = time.time(), time.process_time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    base_cfg = read_init_config(cfg.init)
    if base_cfg.base:
        raise ConfigError(f"{cfg.init} is an adapter checkpoint; retarget its base model ({base_cfg.base['path']})")
    family = models.registry.model_class(base_cfg.name)
    method = peft_mod.check_method(cfg.peft, family if family is not None else object, base_cfg.name)
    if base_cfg.output_activation != "sigmoid":
        raise ConfigError(f"{cfg.init} is a {base_cfg.output_activation} classifier; retargeting needs a sigmoid "
                          "detector (such as models/pretrained/aed_default)")
    warnings: list[str] = []
    fe = base_cfg.frontend
    audio, feats, labels, names = _clips(cfg, fe, warnings)
    overlap = sorted(set(names) & set(base_cfg.labels))
    if overlap:
        warnings.append(f"classes {overlap} are also classes of the base model: they get fresh heads like the "
                        f"others, and the base's own heads for them are not kept")
    for w in warnings:
        log.warning("%s", w)

    kw: dict[str, Any] = {"num_classes": len(names), **cfg.adapter_kwargs}
    fresh = list(HEAD_PREFIXES)
    if method in ("aat", "loaa"):
        kw["adapter"] = method
        fresh += _adapter_prefixes(base_cfg.name, {**base_cfg.kwargs, **kw})
    model, _ = models.load(cfg.init, fresh=tuple(fresh), **kw)
    if len(names) == len(base_cfg.labels):
        model.reset_classifier(len(names))            # same shape, other labels: fresh all the same
    with_frames = model.forward_logits(torch.zeros(1, model.t_min, model.num_mel_bins))[1] is not None
    if not with_frames:
        raise ConfigError(f"{base_cfg.name} has no frame head; retargeting a detector needs one")
    stats = peft_mod.prepare(model, method)
    trained = peft_mod.trainable_state_names(model)
    log.info("PEFT %s on %s: %d of %d parameters trainable (%.2f %%), %d classes, %d clips", method, base_cfg.name,
             stats["trainable"], stats["total"], 100 * stats["fraction"], len(names), len(feats))

    sed = SedConfig(model=base_cfg.name, batch_size=cfg.batch_size, window_s=cfg.window_s,
                    vary_window=cfg.vary_window, min_window_s=cfg.min_window_s, max_window_s=cfg.max_window_s,
                    noise_dir=cfg.noise_dir or "", cache_dir=cfg.cache_dir, seed=cfg.seed)
    negatives = build_negative_bank(fe, cfg.noise_dir, "train", cfg.cache_dir, seed=cfg.seed, keep_audio=True,
                                    speech=cfg.speech)
    batcher = SedBatcher(feats, labels, len(names), fe, negatives, sed)
    lr = cfg.lr or DEFAULT_LR[method]
    new = set(trained) if method != "full" else {n for n in trained if n.startswith(tuple(fresh))}
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and n in new], "base_lr": lr},
              {"params": [p for n, p in model.named_parameters() if p.requires_grad and n not in new],
               "base_lr": lr / 10}]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    steps = max(10, int(len(feats) / (cfg.batch_size * (1 - sed.neg_fraction))))
    total = steps * cfg.epochs
    ema = EMA(model, cfg.ema_decay, names=trained)      # only what trains: the frozen tensors stay bit-exact
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"retarget": cfg.to_dict(), "labels": names}, indent=1))
    params = [p for g in groups for p in g["params"]]
    history = []
    for step in range(total):
        peft_mod.train_mode(model)
        x, yc, yf = batcher.batch(cfg.batch_size, draw_window(cfg, fe, model, rng), rng)
        scale = cosine_schedule(step, total, steps, 0.02)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        loss, _ = detection_loss(model, x, yc, yf)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        ema.update(model)
        history.append(float(loss.detach()))
        if (step + 1) % steps == 0:
            log.info("epoch %d/%d: loss %.4f", (step + 1) // steps, cfg.epochs, float(np.mean(history[-steps:])))
    ema.copy_to(model)
    model.eval()
    train_cpu = time.process_time() - c0
    # the base's detection settings, without its per-class thresholds (they are for its own labels)
    config = replace(build_config(model, labels=names, frontend=fe, window=base_cfg.window),
                     detection=replace(base_cfg.detection, thresholds={}))
    thresholds = example_thresholds(model, config, None if cfg.val_data else (audio, labels), negatives, cfg,
                                    warnings)
    provenance = {"recipe": "models.training.retarget", "retarget_config": cfg.to_dict(), "method": method,
                  "base": str(cfg.init), "base_name": base_cfg.name, "train_clips": len(feats), "steps": total,
                  "trainable": stats["trainable"], "total": stats["total"], "loss_last_epoch":
                  float(np.mean(history[-steps:])), "cpu_minutes_training": train_cpu / 60,
                  "device": "CPU, %d thread(s)" % torch.get_num_threads(), "warnings": warnings}
    config = replace(config, detection=replace(config.detection, thresholds=thresholds), training=provenance)
    final = out / "final"
    if method == "full":
        save_with_config(model, final, config)
    else:
        save_adapter(model, final, config, cfg.init, trained, method)
    if cfg.export:
        export_onnx(model, final / "model.onnx", models.io.read_config(final))
    size = (final / "model.safetensors").stat().st_size
    result = RetargetResult(out=final, labels=names, trainable=stats["trainable"], total=stats["total"],
                            cpu_minutes=(time.process_time() - c0) / 60, wall_minutes=(time.time() - t0) / 60,
                            checkpoint_bytes=size, thresholds=thresholds, warnings=warnings)
    (out / "result.json").write_text(json.dumps(result.summary(), indent=1))
    return result


def example_thresholds(model: nn.Module, config: Any, examples: tuple[Sequence[np.ndarray], Sequence[int]] | None,
                       negatives: Any, cfg: RetargetConfig, warnings: list[str]) -> dict[str, float]:
    """Per-class thresholds from the user's clips, where there are enough of them.

    ``examples`` is ``(audio, labels)`` of the training clips; None reads ``cfg.val_data`` instead. Every clip and
    every negative recording (at most a half-minute of each kind) is streamed through :class:`realtime.Detector`
    with the model's own detection settings; a class's *positive peak* on a clip of its own is the highest score
    its tracker followed, its *negative peak* the highest on the negatives and on other classes' clips. A class
    with at least :data:`MIN_THRESHOLD_CLIPS` clips whose lowest positive peak lies above its highest negative
    peak gets the midpoint (clamped to 0.2-0.9); the others keep the default threshold
    (``config.detection.threshold``), with a warning. Training clips score higher than new recordings would, so
    the lowest positive peak is used, not a typical one.
    """
    from engines.torch_engine import TorchEngine
    from realtime import Detector

    from .sed_eval import record_trace

    engine = TorchEngine(model=model, config=config.to_dict(), device="cpu", num_threads=cfg.threads)
    det = Detector(engine)
    names = list(config.labels)
    C = len(names)
    if examples is None:
        from .data import decode_items, load_folder

        ds = load_folder(cfg.val_data, labels=names)
        waves, kept, _ = decode_items(ds.items, config.frontend.sample_rate)
        examples = (waves, [it.label for it in kept])
    audio, labs = examples

    def peak(x: np.ndarray, name: str) -> np.ndarray:
        scores = record_trace(det, x, name).scores
        return scores.max(axis=0) if len(scores) else np.zeros(C)

    P = np.stack([peak(a, "clip") for a in audio]) if len(audio) else np.zeros((0, C))
    sr = config.frontend.sample_rate
    neg_peak = np.zeros(C)
    for kind, clips in getattr(negatives, "audio", {}).items():
        neg_peak = np.maximum(neg_peak, peak(np.concatenate(clips)[:30 * sr], kind))
    labs_arr = np.asarray(labs)
    out: dict[str, float] = {}
    default = float(config.detection.threshold)
    for c, name in enumerate(names):
        own = P[labs_arr == c, c]
        other = P[labs_arr != c, c]
        neg = max(float(neg_peak[c]), float(other.max()) if len(other) else 0.0)
        if len(own) < MIN_THRESHOLD_CLIPS:
            warnings.append(f"class {name!r}: {len(own)} example clip(s), fewer than {MIN_THRESHOLD_CLIPS}: it keeps "
                            f"the default threshold {default:g}")
            continue
        lo = float(own.min())
        if lo <= neg:
            warnings.append(f"class {name!r}: its weakest example scores {lo:.2f}, not above the highest score on "
                            f"other sounds ({neg:.2f}): it keeps the default threshold {default:g}")
            continue
        out[name] = round(float(np.clip(0.5 * (lo + neg), 0.2, 0.9)), 3)
    return out
