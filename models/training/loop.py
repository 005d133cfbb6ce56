"""The trainer: any registered model, from scratch or a checkpoint, on CPU or CUDA, one process or DDP.

AdamW with a linear warm-up and a cosine decay, an EMA of the weights (the EMA is what gets
validated and shipped), mixed precision on CUDA, fixed seeds, a resumable state every epoch
(safetensors + JSON), a progress bar with loss, throughput and ETA, metrics to CSV and JSON lines,
and a learning-curve PNG. Under ``torchrun`` it runs DistributedDataParallel (gloo on CPU, NCCL on CUDA).

Example:
    >>> cfg = TrainConfig(model="datar_test", data="../shared/data/esc50", epochs=1)  # doctest: +SKIP
    >>> result = train(cfg)  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from realtime.config import WindowConfig
from realtime.errors import ConfigError

from .augment import AugmentConfig, ClipBatcher, draw_window_frames
from .build import HEAD_PREFIXES, build_model, check_model_kwargs, model_parameters, read_init_config
from .checkpoint import load_state, restore_optimizer, save_state
from .datasets import TrainData, load_train_data, train_labels
from .evaluate import clip_scores, clip_metrics

__all__ = ["TrainConfig", "TrainResult", "train", "cosine_schedule", "EMA", "read_init_config", "build_model",
           "check_model_kwargs", "model_parameters", "curve_series", "HEAD_PREFIXES"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything a run needs; written into the run's ``config.json`` and the shipped model's provenance."""

    model: str = "datar_tiny"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    peft: str | None = None
    data: str = "../shared/data/esc50"
    layout: str = "esc50"
    train_folds: list[int] = field(default_factory=lambda: [1, 2, 3])
    val_folds: list[int] = field(default_factory=lambda: [4])
    licenses: list[str] | None = field(default_factory=lambda: ["CC0", "CC-BY"])
    val_data: str | None = None
    noise_dir: str | None = "../shared/data/noise"
    out: str = "runs/train"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.999
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    output_activation: str = "softmax"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    steps_per_epoch: int | None = None
    eval_window_s: float = 1.0
    eval_hop_s: float = 0.1
    val_hop_s: float = 0.5
    val_every: int = 1
    max_val_clips: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = "runs/cache"
    resume: bool = False
    amp: bool = True
    progress: bool = True
    export: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = asdict(self.augment)
        return d


@dataclass
class TrainResult:
    """What a run produced: the last epoch's metrics, the best validation accuracy and where things are."""

    epoch: int
    step: int
    metrics: dict[str, float]
    best_val_accuracy: float
    out: Path
    seconds: float


def cosine_schedule(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1 over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class EMA:
    """Exponential moving average of a model's floating-point state (with the usual warm-up of the decay)."""

    def __init__(self, model: nn.Module, decay: float, names: list[str] | None = None) -> None:
        self.decay = decay
        self.updates = 0
        keep = None if names is None else set(names)   # PEFT: only what trains (a frozen tensor stays bit-exact)
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items() if keep is None or k in keep}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        for k, s in self.shadow.items():
            v = state[k]
            if v.is_floating_point():
                s.mul_(d).add_(v.detach().float(), alpha=1.0 - d)
            else:
                s.copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        model.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in self.shadow.items()}}, strict=True)


class _Logits(nn.Module):
    """Wraps a model so that DDP's forward returns the clip logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_logits(x)[0]


def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return rank, world, torch.device("cuda", local)
    return rank, world, torch.device(device)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _loss(logits: torch.Tensor, y: torch.Tensor, activation: str, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if activation == "softmax":
        if smoothing > 0:
            y = y * (1 - smoothing) + smoothing / y.shape[1]
        return torch.sum(-y * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.binary_cross_entropy_with_logits(logits, y)


def curve_series(rows: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """The learning curves of the per-epoch ``rows``: ``{name: (epochs, values)}``, NaN where a row has no value."""
    def col(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    ep = col("epoch")
    return {k: (ep, col(k)) for k in ("train_loss", "val_loss", "val_accuracy", "val_map")}


_CURVE_LABELS = {"train_loss": "train loss", "val_loss": "val loss", "val_accuracy": "val accuracy",
                 "val_map": "val mAP"}


def _curve_figure(rows: list[dict[str, Any]]):
    """The learning-curve figure: losses on the left, accuracy and mAP on the right.

    Every curve is drawn with markers, so an epoch shows as a point even where a curve has only one (a line
    alone needs two).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = curve_series(rows)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys in ((a, ("train_loss", "val_loss")), (b, ("val_accuracy", "val_map"))):
        for k in keys:
            ax.plot(*series[k], "o-", label=_CURVE_LABELS[k])
        ax.set_xlabel("epoch")
        ax.legend()
    a.set_ylabel("loss")
    b.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = _curve_figure(rows)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_model(model: nn.Module, directory: Path, data: TrainData, cfg: TrainConfig, provenance: dict[str, Any]) -> None:
    """Write a model directory; its :class:`ModelConfig` has the run's front end, window and default detection."""
    from models.io import build_config, save_with_config

    config = build_config(model, labels=data.labels, frontend=data.frontend,
                          window=WindowConfig(cfg.eval_window_s, cfg.eval_hop_s), training=provenance)
    save_with_config(model, directory, config)


@dataclass
class _Run:
    """The state of one training run, shared by the steps of :func:`train`."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    out: Path
    main: bool
    t_start: float
    data: TrainData | None = None
    model: nn.Module | None = None
    batcher: ClipBatcher | None = None
    n_train: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup: int = 0
    params: list[nn.Parameter] = field(default_factory=list)
    opt: torch.optim.Optimizer | None = None
    ema: EMA | None = None
    use_amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    scaler: Any = None
    net: nn.Module | None = None
    start_epoch: int = 0
    step: int = 0
    best: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    t_loop: float = 0.0


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; returns the last epoch's metrics.

    The steps: start the processes (:func:`_start`), read the data and build the model (:func:`_data_and_model`),
    set up the optimisation (:func:`_optimisation`), then per epoch train (:func:`_train_epoch`) and validate,
    save and log (:func:`_finish_epoch`), and at the end export (:func:`_export`).

    Raises:
        FileNotFoundError: ``cfg.init`` is not a checkpoint directory (checked before any data is decoded), or the
            data is missing.
        ConfigError: the data's metadata, the settings or the checkpoint are not usable (the message says why).
        ModelFileError: the ``cfg.init`` checkpoint is corrupt or does not fit the model.
        AudioError: no training clip could be decoded.
    """
    if cfg.init:
        read_init_config(cfg.init)
    run = _start(cfg)
    _data_and_model(run)
    _optimisation(run)
    metrics: dict[str, Any] = {}
    run.t_loop = time.time()  # ETA: training time of this process only (no data loading, no earlier run)
    for epoch in range(run.start_epoch, cfg.epochs):
        metrics = _train_epoch(run, epoch)
        if run.world > 1:
            torch.distributed.barrier()
        if run.main:
            _finish_epoch(run, epoch, metrics)
        if run.world > 1:
            torch.distributed.barrier()
    if run.main and cfg.export and (run.out / "best").is_dir():
        _export(run.out / "best", Path(cfg.export))
    return TrainResult(epoch=cfg.epochs, step=run.step, metrics=metrics, best_val_accuracy=run.best, out=run.out,
                       seconds=time.time() - run.t_start)


def _start(cfg: TrainConfig) -> _Run:
    """Processes (DDP under torchrun), threads, seeds and the run directory."""
    rank, world, device = _dist_setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_all(cfg.seed + rank)
    out = Path(cfg.out)
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    return _Run(cfg=cfg, rank=rank, world=world, device=device, out=out, main=main, t_start=time.time())


def _data_and_model(run: _Run) -> None:
    """The model (built once, from the labels the metadata names), then the features at its mel bins."""
    cfg = run.cfg
    labels = train_labels(cfg)
    model = build_model(cfg, labels)
    data = load_train_data(cfg, num_mel_bins=model.num_mel_bins)
    if data.labels != labels:  # pragma: no cover - the same metadata read twice
        raise ConfigError(f"the training data's labels changed while it was read: {labels[:5]} ... vs "
                          f"{data.labels[:5]} ...")
    run.data, run.model = data, model.to(run.device)
    run.batcher = ClipBatcher(data.train_feats, data.train_labels, len(data.labels), data.frontend, cfg.augment,
                              data.noise_feats)
    run.n_train = len(data.train_feats)
    run.steps_per_epoch = cfg.steps_per_epoch or max(1, run.n_train // (cfg.batch_size * run.world))
    run.total_steps = run.steps_per_epoch * cfg.epochs
    run.warmup = int(round(cfg.warmup_epochs * run.steps_per_epoch))


def _optimisation(run: _Run) -> None:
    """AdamW, the EMA, mixed precision, a resumed state (``cfg.resume``), the DDP wrapper and the run's config."""
    cfg, model, out, device = run.cfg, run.model, run.out, run.device
    run.params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in run.params if p.ndim > 1]
    no_decay = [p for p in run.params if p.ndim <= 1]
    run.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    from models import peft

    names = peft.trainable_state_names(model) if cfg.peft and cfg.peft != "full" else None
    run.ema = EMA(model, cfg.ema_decay, names) if cfg.ema_decay > 0 else None
    run.use_amp = cfg.amp and device.type == "cuda"
    run.amp_dtype = torch.bfloat16 if run.use_amp and torch.cuda.is_bf16_supported() else torch.float16
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.use_amp and run.amp_dtype == torch.float16)
    ema = run.ema
    if cfg.resume and (out / "last" / "state.json").is_file():
        msd, esd, otensors, st = load_state(out / "last")
        model.load_state_dict(msd, strict=True)
        if ema is not None and esd is not None:
            ema.shadow = {k: v.to(device) for k, v in esd.items()}
            ema.updates = st.get("ema_updates", 0)
        restore_optimizer(run.opt, otensors, st["optimizer"])
        run.start_epoch, run.step, run.best = st["epoch"], st["step"], st.get("best_val_accuracy", -1.0)
        run.history = st.get("history", [])
        if run.main:
            log.info("resumed from %s at epoch %d, step %d", out / "last", run.start_epoch, run.step)
    elif run.main:
        (out / "metrics.csv").unlink(missing_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if ema is not None:
        ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}
    run.net = _Logits(model)
    if run.world > 1:
        run.net = nn.parallel.DistributedDataParallel(run.net, find_unused_parameters=True)
    if run.main:
        (out / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "world_size": run.world,
                                                     "labels": run.data.labels,
                                                     "frontend": run.data.frontend.to_dict()}, indent=1))


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """One epoch of optimiser steps; returns its training metrics."""
    from models import peft

    cfg, model, world, rank, n_train = run.cfg, run.model, run.world, run.rank, run.n_train
    if cfg.peft and cfg.peft != "full":
        peft.train_mode(model)          # frozen BatchNorms keep their statistics
    else:
        model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(n_train, generator=gen)
    gen_rank = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) * 131 + rank)
    torch.manual_seed(cfg.seed * 7919 + epoch * 31 + rank)
    bar = _progress(run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", run.main and cfg.progress)
    t0, seen, loss_sum, lr = time.time(), 0, 0.0, cfg.lr
    for i in range(run.steps_per_epoch):
        lo = (i * world + rank) * cfg.batch_size
        idx = [int(order[j % n_train]) for j in range(lo, lo + cfg.batch_size)]
        frames = draw_window_frames(gen_rank, cfg.augment.min_window_s, cfg.augment.max_window_s, run.data.frontend,
                                    model.t_min, model.t_max)
        x, y = run.batcher.batch(idx, frames, gen_rank, augment=True)
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        lr = cfg.lr * cosine_schedule(run.step, run.total_steps, run.warmup, cfg.min_lr_ratio)
        for g in run.opt.param_groups:
            g["lr"] = lr
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.use_amp):
            logits = run.net(x)
        loss = _loss(logits, y, cfg.output_activation, cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {run.step}")
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            run.scaler.unscale_(run.opt)
            nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
        run.scaler.step(run.opt)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update(model)
        run.step += 1
        seen += len(idx) * world
        loss_sum += loss.item()
        if bar is not None:
            el = time.time() - t0
            done_here = run.step - run.start_epoch * run.steps_per_epoch
            eta = (time.time() - run.t_loop) / max(1, done_here) * (run.total_steps - run.step)
            bar.set_postfix(loss=f"{loss_sum / (i + 1):.3f}", clips_s=f"{seen / max(el, 1e-9):.1f}",
                            lr=f"{lr:.2e}", eta_run=f"{eta / 60:.1f}m")
            bar.update(1)
    if bar is not None:
        bar.close()
    train_time = time.time() - t0
    return {"epoch": epoch + 1, "step": run.step, "lr": lr, "train_loss": loss_sum / run.steps_per_epoch,
            "train_clips_per_s": seen / max(train_time, 1e-9), "epoch_seconds": train_time}


def _finish_epoch(run: _Run, epoch: int, metrics: dict[str, Any]) -> None:
    """Validate the EMA weights, save ``best`` and ``final``, append the metrics, draw the curves, save the state."""
    cfg, model, data, ema, out = run.cfg, run.model, run.data, run.ema, run.out
    if ema is not None:
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ema.copy_to(model)
    last_epoch = epoch + 1 == cfg.epochs
    if data.val_feats and ((epoch + 1) % max(1, cfg.val_every) == 0 or last_epoch):
        metrics.update(_validate(model, data, cfg, run.device))
    best_now = metrics.get("val_accuracy", -1.0 if data.val_feats else -metrics["train_loss"])
    provenance = {"train_config": cfg.to_dict(), "epoch": epoch + 1, "step": run.step, "world_size": run.world,
                  "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                  "train_clips": run.n_train, "val_clips": len(data.val_feats),
                  "skipped_files": data.skipped, "seconds": time.time() - run.t_start,
                  "device": _device_name(run.device)}
    if best_now > run.best:
        run.best = best_now
        _save_model(model, out / "best", data, cfg, provenance)
    metrics["best_val_accuracy"] = run.best
    _save_model(model, out / "final", data, cfg, provenance)
    if ema is not None:
        model.load_state_dict(saved, strict=True)
    run.history.append(metrics)
    _append_metrics(out, metrics)
    _plot_curves(run.history, out / "learning_curves.png")
    save_state(out / "last", model.state_dict(), None if ema is None else ema.shadow, run.opt,
               {"epoch": epoch + 1, "step": run.step, "best_val_accuracy": run.best, "history": run.history,
                "ema_updates": 0 if ema is None else ema.updates, "train_config": cfg.to_dict()})
    log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


def _validate(model: nn.Module, data: TrainData, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    feats, labels = data.val_feats, np.asarray(data.val_labels)
    if cfg.max_val_clips:
        feats, labels = feats[:cfg.max_val_clips], labels[:cfg.max_val_clips]
    win, hop = WindowConfig(cfg.eval_window_s, cfg.val_hop_s).frames(data.frontend)
    scores, logp = clip_scores(model, feats, win, hop, data.frontend, device=device, return_log=True)
    m = clip_metrics(scores, labels)
    val_loss = float(-np.mean(logp[np.arange(len(labels)), labels])) if cfg.output_activation == "softmax" else None
    return {"val_accuracy": m["accuracy"], "val_map": m["map"], "val_loss": val_loss}


_METRIC_KEYS = ["epoch", "step", "lr", "train_loss", "train_clips_per_s", "epoch_seconds", "val_accuracy", "val_map",
                "val_loss", "best_val_accuracy"]


def _append_metrics(out: Path, metrics: dict[str, Any]) -> None:
    path = out / "metrics.csv"
    keys = _METRIC_KEYS + [k for k in metrics if k not in _METRIC_KEYS]
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(metrics)
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=2.0)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def _export(src: Path, dst: Path) -> None:
    import shutil

    import models

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy2(src / name, dst / name)
    model, config = models.load(dst)
    models.export_onnx(model.eval(), dst / "model.onnx", config)
