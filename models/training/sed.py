"""The sound-event-detection recipe: frame and clip targets, explicit negatives, sigmoid + BCE.

Every training example is a window of ``T`` frames built in the mel power domain:

- a background: the event clip's own (30 %), or a negative from :class:`~.sed_data.NegativeBank` (recordings,
  coloured noise, speech at a random natural level; dither and silence as they are);
- with probability ``1 - neg_fraction`` an event: either an energy-aware crop of a clip (the event fills the
  window) or an *onset crop* (the event's first active frame lands at a random position in the window, with
  only background before it, so the newest frames learn to fire as soon as a sound starts); each of
  ``mix_events`` further events of another class is mixed in with probability ``mix_prob`` (targets: the union);
- gain ``±gain_db`` on the event; a background is scaled to an SNR drawn from ``snr_db`` over the event's active
  frames, and frames where the event lies more than ``-local_snr_db`` dB under the background are not labelled;
- SpecAugment (one frequency and one time mask).

Targets: frame targets ``(T, C)`` from each clip's activity mask, clip targets ``(C,)`` = any frame active
(at least ``min_active`` frames). Loss: BCE on the clip head plus ``frame_weight`` x BCE on the frame head (frame
targets max-pooled to the head's frames). AdamW with separate learning rates for pretrained and new tensors,
warm-up then cosine decay, an EMA of the weights (what gets validated and saved), a resumable state every
epoch. Optional extra terms: clip-score distillation from a trained teacher (``distill_from``), and AudioSet
retention (``retain_audioset``: an auxiliary head learns the frozen pretrained network's 527 outputs, so that
fine-tuning forgets less; measured in ``benchmarks/results/selection/README.md``, no gain on ESC-50).

Example:
    >>> cfg = SedConfig(model="mn_test", epochs=1)  # doctest: +SKIP
    >>> train_sed(cfg)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from realtime.config import FrontEndConfig, WindowConfig, seconds_to_frames
from realtime.errors import ConfigError

from .sed_data import NegativeBank, activity_mask, build_negative_bank, clip_arrays, features, from_power, power

__all__ = ["SedConfig", "SedBatcher", "train_sed", "frame_targets_to", "init_from_efficientat", "subset_classes",
           "draw_window", "detection_loss"]

log = logging.getLogger(__name__)


@dataclass
class SedConfig:
    """A detection training run (seconds and decibels at the surface)."""

    model: str = "datar_mn04"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = "../shared/models/efficientat/mn04_as_mAP_432.pt"
    data: str = "../shared/data/esc50"
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    val_folds: list[int] = field(default_factory=lambda: [4])
    licenses: list[str] | None = field(default_factory=lambda: ["CC0", "CC-BY"])
    noise_dir: str = "../shared/data/noise"
    out: str = "runs/sed"
    cache_dir: str = "runs/cache"
    epochs: int = 30
    steps_per_epoch: int | None = None
    batch_size: int = 48
    lr_pretrained: float = 3e-4
    lr_new: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    ema_decay: float = 0.995
    frame_weight: float = 1.0
    neg_fraction: float = 0.35
    onset_fraction: float = 0.4
    # of the onset crops, the share whose onset lands in the window's last ``late_onset_s`` (what the newest frames
    # see in the first moments of a sound, which is what an onset's latency depends on)
    late_onset_share: float = 0.0
    late_onset_s: float = 0.4
    # extra weight of the BCE on the frame head's newest frame (the one the runtime's tracker follows)
    newest_weight: float = 0.0
    own_background: float = 0.3
    mix_prob: float = 0.25
    # how many further events may be mixed into an event window, each with probability ``mix_prob`` (the test
    # soundscapes hold up to three sources at once)
    mix_events: int = 1
    gain_db: float = 12.0
    snr_db: tuple[float, float] = (0.0, 30.0)
    local_snr_db: float = -6.0
    freq_mask: int = 16
    time_mask: int = 12
    window_s: float = 1.0
    vary_window: float = 0.3
    min_window_s: float = 0.5
    max_window_s: float = 2.5
    min_active: int = 3
    classes: list[str] | None = None
    distill_from: str | None = None
    distill_weight: float = 0.5
    # weight of a learning-without-forgetting term: an auxiliary 527-way head on the student's pooled features is
    # trained towards the frozen AudioSet network's (``pretrained``) sigmoid outputs on the same windows (0: off);
    # the auxiliary head is dropped from the exported model
    retain_audioset: float = 0.0
    seed: int = 0
    threads: int = 1
    val_every: int = 5
    resume: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LEVELS = {"recording": (-60.0, -20.0), "coloured": (-60.0, -20.0), "speech": (-45.0, -15.0)}


class SedBatcher:
    """Builds ``(x (B, T, F), clip targets (B, C), frame targets (B, T, C))`` batches from cached features.

    Args:
        feats: normalised log-mel per event clip.
        labels: class index per clip.
        num_classes: classes ``C``.
        fe: front end (for power-domain sums).
        negatives: the negative bank.
        cfg: recipe settings.
    """

    def __init__(self, feats: Sequence[torch.Tensor], labels: Sequence[int], num_classes: int, fe: FrontEndConfig,
                 negatives: NegativeBank, cfg: SedConfig) -> None:
        self.feats = list(feats)
        self.labels = list(labels)
        self.C = num_classes
        self.fe = fe
        self.neg = negatives
        self.cfg = cfg
        self.masks = [activity_mask(f, fe) for f in self.feats]
        self.powers = [power(f, fe) for f in self.feats]
        self.energy = [p.sum(dim=1) for p in self.powers]
        self.onsets = [torch.nonzero(m & ~torch.cat([m.new_zeros(1), m[:-1]])).flatten() for m in self.masks]
        self.neg_kinds = negatives.kinds
        self.by_class: dict[int, list[int]] = {}
        for i, c in enumerate(self.labels):
            self.by_class.setdefault(c, []).append(i)

    # -- pieces ----------------------------------------------------------------------------------------------
    def _background(self, T: int, rng: np.random.Generator) -> torch.Tensor:
        """A negative window's mel power ``(T, F)`` at a drawn level."""
        kind = self.neg_kinds[int(rng.integers(len(self.neg_kinds)))]
        k = int(rng.integers(len(self.neg.feats[kind])))
        f, lvl = self.neg.feats[kind][k], self.neg.level_db[kind][k]
        if f.shape[0] < T:
            f = f.repeat(math.ceil(T / f.shape[0]) + 1, 1)
        s = int(rng.integers(0, f.shape[0] - T + 1))
        p = power(f[s:s + T], self.fe)
        rng_db = _LEVELS.get(kind.split(":")[0])
        if rng_db is not None:
            p = p * 10.0 ** ((float(rng.uniform(*rng_db)) - lvl) / 10.0)
        return p

    def _event(self, i: int, T: int, rng: np.random.Generator, onset: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel power ``(T, F)`` and activity ``(T,)`` of clip ``i`` placed in a window of ``T`` frames."""
        p, m, n = self.powers[i], self.masks[i], self.powers[i].shape[0]
        out_p = torch.zeros(T, p.shape[1])
        out_m = torch.zeros(T, dtype=torch.bool)
        if onset and len(self.onsets[i]):
            a = int(self.onsets[i][int(rng.integers(len(self.onsets[i])))])
            u = int(rng.integers(0, max(1, T - 5)))             # where the onset lands in the window
            late = seconds_to_frames(self.cfg.late_onset_s, self.fe)
            if self.cfg.late_onset_share > 0 and rng.random() < self.cfg.late_onset_share and T > late:
                u = int(rng.integers(T - late, T - 1))
            k = min(T - u, n - a)
            out_p[u:u + k], out_m[u:u + k] = p[a:a + k], m[a:a + k]
            return out_p, out_m
        if n <= T:
            u = int(rng.integers(0, T - n + 1))
            out_p[u:u + n], out_m[u:u + n] = p, m
            return out_p, out_m
        c = torch.cat([torch.zeros(1), self.energy[i].cumsum(0)])
        win = c[T:] - c[:-T]                                     # energy of every crop
        ok = torch.nonzero(win >= 0.3 * win.max()).flatten()
        s = int(ok[int(rng.integers(len(ok)))]) if rng.random() < 0.85 else int(rng.integers(0, n - T + 1))
        return p[s:s + T].clone(), m[s:s + T].clone()

    def example(self, T: int, rng: np.random.Generator, negative: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One window: normalised log-mel ``(T, F)`` and frame targets ``(T, C)``."""
        cfg = self.cfg
        y = torch.zeros(T, self.C)
        if negative:
            if rng.random() < 0.15:                              # a quiet stretch of an event clip: not its class
                i = int(rng.integers(len(self.feats)))
                run = self._quiet_start(self.masks[i], T)
                if run is not None:
                    return self.feats[i][run:run + T].clone(), y
            return from_power(self._background(T, rng), self.fe), y
        i = int(rng.integers(len(self.feats)))
        p, m = self._event(i, T, rng, onset=rng.random() < cfg.onset_fraction)
        p = p * 10.0 ** (float(rng.uniform(-cfg.gain_db, cfg.gain_db)) / 10.0)
        y[:, self.labels[i]] = m.float()
        for _ in range(cfg.mix_events):
            if rng.random() >= cfg.mix_prob:
                continue
            j = int(rng.integers(len(self.feats)))
            if self.labels[j] != self.labels[i]:
                p2, m2 = self._event(j, T, rng, onset=rng.random() < 0.5)
                p = p + p2 * 10.0 ** (float(rng.uniform(-cfg.gain_db, 0.0)) / 10.0)
                y[:, self.labels[j]] = torch.maximum(y[:, self.labels[j]], m2.float())
        if rng.random() >= cfg.own_background:
            bg = self._background(T, rng)
            act = y.amax(dim=1) > 0
            ev_e, bg_e = p.sum(dim=1), bg.sum(dim=1)              # (T,) mel power per frame
            if act.any() and float(bg_e.mean()) > 0:
                # background scaled to an SNR over the event's active frames (DESED-style mixing), then a frame is
                # labelled only where the event is not buried: local SNR of at least local_snr_db
                snr = float(rng.uniform(*cfg.snr_db))
                scale = float(ev_e[act].mean()) / float(bg_e.mean()) * 10.0 ** (-snr / 10.0)
                bg, bg_e = bg * scale, bg_e * scale
                audible = ev_e >= bg_e * 10.0 ** (cfg.local_snr_db / 10.0)
                y = y * audible[:, None].float()
            p = p + bg
        return from_power(p, self.fe), y

    @staticmethod
    def _quiet_start(mask: torch.Tensor, T: int) -> int | None:
        c = torch.cat([torch.zeros(1), mask.float().cumsum(0)])
        ok = torch.nonzero((c[T:] - c[:-T]) == 0).flatten()
        return int(ok[0]) if len(ok) else None

    def batch(self, B: int, T: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for b in range(B):
            x, y = self.example(T, rng, negative=rng.random() < self.cfg.neg_fraction)
            xs.append(x)
            ys.append(y)
        x, yf = torch.stack(xs), torch.stack(ys)                 # (B, T, F), (B, T, C)
        x = _spec_augment(x, self.cfg.freq_mask, self.cfg.time_mask, rng)
        yc = (yf.sum(dim=1) >= self.cfg.min_active).float()     # (B, C): the event is in the window
        return x, yc, yf


def _spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int, rng: np.random.Generator) -> torch.Tensor:
    """One frequency and one time mask per example, set to the example's minimum (its floor)."""
    B, T, Fq = x.shape
    x = x.clone()
    for b in range(B):
        if rng.random() < 0.5:
            continue
        lo = x[b].min()
        if freq_mask > 0:
            w = int(rng.integers(0, freq_mask + 1))
            f0 = int(rng.integers(0, max(1, Fq - w)))
            x[b, :, f0:f0 + w] = lo
        if time_mask > 0:
            w = int(rng.integers(0, min(time_mask, T // 4) + 1))
            t0 = int(rng.integers(0, max(1, T - w)))
            x[b, t0:t0 + w, :] = lo
    return x


def draw_window(cfg: Any, fe: FrontEndConfig, model: nn.Module, rng: np.random.Generator) -> int:
    """A training window in frames: ``cfg.window_s``, or with probability ``cfg.vary_window`` one drawn from
    ``cfg.min_window_s..cfg.max_window_s``, within the model's range."""
    T = seconds_to_frames(cfg.window_s, fe)
    if rng.random() < cfg.vary_window:
        T = seconds_to_frames(rng.uniform(cfg.min_window_s, cfg.max_window_s), fe)
    return min(max(T, model.t_min), model.t_max)


def detection_loss(model: nn.Module, x: torch.Tensor, yc: torch.Tensor, yf: torch.Tensor, frame_weight: float = 1.0,
                   feats: torch.Tensor | None = None, newest_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the clip head against ``yc`` plus ``frame_weight`` x BCE of the frame head against ``yf`` (max-pooled
    to its frames) plus ``newest_weight`` x BCE of its newest frame alone; returns ``(loss, clip logits)``.
    ``feats``: the model's ``forward_features(x)``, where the caller has it already."""
    clip, frames = model.forward_logits(x) if feats is None else model.forward_head(feats)
    loss = F.binary_cross_entropy_with_logits(clip, yc)
    target = frame_targets_to(yf, frames.shape[1])
    loss = loss + frame_weight * F.binary_cross_entropy_with_logits(frames, target)
    if newest_weight > 0:
        loss = loss + newest_weight * F.binary_cross_entropy_with_logits(frames[:, -1], target[:, -1])
    return loss, clip


def frame_targets_to(yf: torch.Tensor, frames: int) -> torch.Tensor:
    """Frame targets ``(B, T, C)`` max-pooled to the head's ``frames``: ``(B, frames, C)``."""
    return F.adaptive_max_pool1d(yf.transpose(1, 2), frames).transpose(1, 2)


def init_from_efficientat(model: nn.Module, checkpoint: str | Path) -> list[str]:
    """Copy the pretrained EfficientAT tensors that fit ``model`` (by name and shape); return their names.

    Only the model's own MobileNet part is taken (``features.*``, and ``classifier.2`` where the model has it); the
    last classifier layer always starts fresh because the label set differs.
    """
    from models.efficientat import read_efficientat_state

    state = read_efficientat_state(checkpoint)
    ours = model.state_dict()
    take = {k: v for k, v in state.items() if k in ours and tuple(v.shape) == tuple(ours[k].shape)
            and not k.startswith("classifier.5")}
    missing_stem = [k for k in ours if k.startswith("features.") and k not in take]
    if missing_stem:
        raise ConfigError(f"{checkpoint} does not fit the stem of the model: e.g. {missing_stem[:3]}")
    ours.update(take)
    model.load_state_dict(ours, strict=True)
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(model.num_classes)   # fresh output layers, biases at the "nothing here" prior
    return sorted(take)


def _param_groups(model: nn.Module, pretrained: set[str], cfg: SedConfig) -> list[dict[str, Any]]:
    groups = {"pre_decay": [], "pre_nodecay": [], "new_decay": [], "new_nodecay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = ("pre" if name in pretrained else "new") + ("_decay" if p.ndim > 1 else "_nodecay")
        groups[key].append(p)
    out = []
    for key, params in groups.items():
        if params:
            out.append({"params": params, "base_lr": cfg.lr_pretrained if key.startswith("pre") else cfg.lr_new,
                        "weight_decay": cfg.weight_decay if key.endswith("_decay") else 0.0, "name": key})
    return out


def subset_classes(ds: Any, classes: Sequence[str] | None) -> Any:
    """``ds`` restricted to ``classes`` (label names, kept in the dataset's own order), labels renumbered."""
    from dataclasses import replace

    from .data import ClipDataset

    if classes is None:
        return ds
    unknown = sorted(set(classes) - set(ds.labels))
    if unknown:
        raise ConfigError(f"classes {unknown} are not in the dataset; accepted: {ds.labels}")
    keep = [lb for lb in ds.labels if lb in set(classes)]
    index = {lb: i for i, lb in enumerate(keep)}
    items = [replace(it, label=index[ds.labels[it.label]]) for it in ds.items
             if ds.labels[it.label] in index]
    return ClipDataset(items, keep)


def _load_event_clips(cfg: SedConfig, folds: list[int], fe: FrontEndConfig, licenses: list[str] | None
                      ) -> tuple[list[torch.Tensor], list[int], list[str], list[Any]]:
    from .data import load_esc50

    ds = subset_classes(load_esc50(cfg.data, folds=folds, licenses=licenses), cfg.classes)
    waves = clip_arrays([it.path for it in ds.items], fe)
    return [features(w, fe) for w in waves], [it.label for it in ds.items], ds.labels, ds.items


def train_sed(cfg: SedConfig) -> Path:
    """Run (or resume) one detection training run; writes ``out/final`` (a checkpoint) and ``out/metrics.jsonl``."""
    import models
    from models.io import build_config, save_with_config
    from models.training.checkpoint import load_state, restore_optimizer, save_state
    from models.training.loop import EMA, cosine_schedule

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    probe = models.create_model(cfg.model, **{"num_classes": 1, **cfg.model_kwargs})
    fe: FrontEndConfig = probe.frontend
    feats, labels, names, items = _load_event_clips(cfg, cfg.train_folds, fe, cfg.licenses)
    negatives = build_negative_bank(fe, cfg.noise_dir, "train", cfg.cache_dir, seed=cfg.seed)
    batcher = SedBatcher(feats, labels, len(names), fe, negatives, cfg)
    model = models.create_model(cfg.model, **{"num_classes": len(names), **cfg.model_kwargs})
    pretrained: set[str] = set()
    if cfg.pretrained:
        pretrained = set(init_from_efficientat(model, cfg.pretrained))
        log.info("initialised %d tensors from %s", len(pretrained), cfg.pretrained)
    teacher = None
    if cfg.distill_from:
        teacher, _ = models.load(cfg.distill_from)
        teacher.eval()
    audioset, aux = _audioset_retention(cfg, model)
    val_feats, val_labels = [], []
    if cfg.val_folds:
        val_feats, val_labels, _, _ = _load_event_clips(cfg, cfg.val_folds, fe, None)
    steps = cfg.steps_per_epoch or max(1, int(len(feats) / (cfg.batch_size * (1 - cfg.neg_fraction))))
    total = steps * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps)
    groups = _param_groups(model, pretrained, cfg)
    if aux is not None:
        groups.append({"params": list(aux.parameters()), "base_lr": cfg.lr_new, "weight_decay": cfg.weight_decay,
                       "name": "audioset_aux"})
    opt = torch.optim.AdamW(groups, lr=cfg.lr_new)
    ema = EMA(model, cfg.ema_decay)
    start_epoch, step, history = 0, 0, []
    if cfg.resume and (out / "last" / "state.json").is_file():
        msd, esd, otensors, st = load_state(out / "last")
        if aux is not None:
            aux.load_state_dict({k[len(AUX_PREFIX):]: msd.pop(k) for k in list(msd) if k.startswith(AUX_PREFIX)})
        model.load_state_dict(msd, strict=True)
        ema.shadow, ema.updates = esd, st.get("ema_updates", 0)
        restore_optimizer(opt, otensors, st["optimizer"])
        start_epoch, step, history = st["epoch"], st["step"], st.get("history", [])
        rng = np.random.default_rng([cfg.seed, start_epoch])
        log.info("resumed %s at epoch %d", out, start_epoch)
    (out / "config.json").write_text(json.dumps({"sed": cfg.to_dict(), "labels": names}, indent=1))
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if aux is not None:
            aux.train()
        t0, loss_sum = time.time(), 0.0
        for _ in range(steps):
            x, yc, yf = batcher.batch(cfg.batch_size, draw_window(cfg, fe, model, rng), rng)
            lr_scale = cosine_schedule(step, total, warmup, 0.02)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_scale
            feats = model.forward_features(x)
            loss, clip = detection_loss(model, x, yc, yf, cfg.frame_weight, feats=feats,
                                        newest_weight=cfg.newest_weight)
            if aux is not None:
                with torch.no_grad():
                    target = torch.sigmoid(audioset.forward_logits(x)[0])      # (B, 527)
                pred = aux(feats.mean(dim=(2, 3)))
                loss = loss + cfg.retain_audioset * F.binary_cross_entropy_with_logits(pred, target)
            if teacher is not None:
                with torch.no_grad():
                    t_clip, t_frames = teacher.forward_logits(x)
                loss = loss + cfg.distill_weight * F.binary_cross_entropy_with_logits(clip, torch.sigmoid(t_clip))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 5.0)
            opt.step()
            ema.update(model)
            step += 1
            loss_sum += float(loss.detach())
        metrics: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / steps,
                                   "epoch_seconds": time.time() - t0}
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.copy_to(model)
        model.eval()
        if val_feats and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            metrics.update(_validate(model, val_feats, val_labels, fe))
        provenance = {"recipe": "models.training.sed", "sed_config": cfg.to_dict(), "epoch": epoch + 1,
                      "train_clips": len(feats), "train_folds": cfg.train_folds, "licenses": cfg.licenses,
                      "pretrained_from": cfg.pretrained and Path(cfg.pretrained).name,
                      "negatives": {k: len(v) for k, v in negatives.feats.items()},
                      "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                      "seconds": time.time() - t_start, "device": "CPU, %d thread(s)" % torch.get_num_threads()}
        save_with_config(model, out / "final", build_config(model, labels=names, frontend=fe,
                                                            window=WindowConfig(1.0, 0.1), training=provenance))
        model.load_state_dict(raw, strict=True)
        history.append(metrics)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        extra = {} if aux is None else {AUX_PREFIX + k: v for k, v in aux.state_dict().items()}
        save_state(out / "last", {**model.state_dict(), **extra}, ema.shadow, opt,
                   {"epoch": epoch + 1, "step": step, "history": history, "ema_updates": ema.updates,
                    "train_config": cfg.to_dict()})
        log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs, {k: round(v, 4) if isinstance(v, float) else v
                                                           for k, v in metrics.items()})
    return out / "final"


AUX_PREFIX = "_audioset_aux."     # the auxiliary head's tensors in a run's training state (never exported)


def _audioset_retention(cfg: SedConfig, model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """The frozen AudioSet network and the student's auxiliary 527-way head, for ``cfg.retain_audioset > 0``."""
    if cfg.retain_audioset <= 0:
        return None, None
    if not cfg.pretrained:
        raise ConfigError("retain_audioset needs the pretrained AudioSet checkpoint (pretrained=PATH)")
    from models.efficientat import load_efficientat_checkpoint

    teacher = load_efficientat_checkpoint(cfg.pretrained, name="mn04", t_min=model.t_min, t_max=model.t_max).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    aux = nn.Linear(model.num_features, teacher.num_classes)
    nn.init.normal_(aux.weight, 0.0, 0.01)
    nn.init.constant_(aux.bias, -4.0)          # AudioSet's outputs are mostly near 0
    return teacher, aux


@torch.no_grad()
def _validate(model: nn.Module, feats: list[torch.Tensor], labels: list[int], fe: FrontEndConfig
              ) -> dict[str, float]:
    """Clip accuracy (1 s windows every 0.5 s, mean of window scores) on held-out clips."""
    from .evaluate import clip_scores

    win, hop = WindowConfig(1.0, 0.5).frames(fe)
    scores = clip_scores(model, feats, win, hop, fe)
    acc = float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))
    return {"val_accuracy": acc}
