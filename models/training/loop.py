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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from realtime.config import FrontEndConfig, WindowConfig
from realtime.errors import ConfigError

from .augment import AugmentConfig, ClipBatcher, draw_window_frames
from .checkpoint import load_state, restore_optimizer, save_state
from .datasets import TrainData, load_train_data
from .evaluate import clip_scores, clip_metrics

__all__ = ["TrainConfig", "TrainResult", "train", "cosine_schedule", "EMA", "read_init_config"]

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

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                       for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(d).add_(v.detach().float(), alpha=1.0 - d)
            else:
                s.copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()}, strict=True)


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


def read_init_config(init: str | Path) -> dict[str, Any]:
    """The ``config.json`` of the checkpoint directory ``init`` (``--init``), checked before any data is decoded.

    Raises:
        FileNotFoundError: ``init`` is not a directory holding ``config.json`` and ``model.safetensors``.
        ConfigError: its ``config.json`` is not valid JSON or names no registered model.
    """
    import models

    d = Path(init)
    accepted = "accepted: a model directory holding config.json and model.safetensors, such as OUT/best of aed train"
    if not d.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {d} to start from (--init); {accepted}")
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"no {name} in the checkpoint directory {d} (--init); {accepted}")
    try:
        ck = json.loads((d / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{d / 'config.json'}: not valid JSON ({e}); {accepted}") from None
    if not isinstance(ck, dict) or not models.is_model(str(ck.get("name"))):
        name = ck.get("name") if isinstance(ck, dict) else None
        raise ConfigError(f"{d / 'config.json'}: names no registered model (name {name!r}); known models: "
                          f"{', '.join(models.list_models())}")
    return ck


def build_model(cfg: TrainConfig, labels: list[str]) -> nn.Module:
    """Create the model, or rebuild ``cfg.init`` (with adapters for ``--peft``), and prepare PEFT when asked.

    From a checkpoint, the only weights allowed to be missing are the new adapters' (zero-initialised, so the
    backbone's output is unchanged) and, when the label set differs, the heads, which start fresh.
    """
    import models

    kw = {"num_classes": len(labels), "output_activation": cfg.output_activation, **cfg.model_kwargs}
    if cfg.peft in ("aat", "loaa"):
        kw.setdefault("adapter", cfg.peft)
    if not cfg.init:
        model = models.create_model(cfg.model, **kw)
    else:
        from safetensors.torch import load_file

        init = Path(cfg.init)
        ck = read_init_config(init)
        model = models.create_model(ck["name"], **{**ck.get("kwargs", {}), **kw})
        state = load_file(str(init / "model.safetensors"))
        same_labels = list(ck.get("labels") or []) == list(labels)
        if not same_labels:
            state = {k: v for k, v in state.items() if not k.startswith(("head.", "frame_head."))}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed = ("adapter",) if same_labels else ("adapter", "head.", "frame_head.")
        bad = [k for k in missing if not any(a in k for a in allowed)]
        if bad or unexpected:
            raise ConfigError(f"checkpoint {init} does not fit {ck['name']}: missing {bad[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
    if cfg.peft:
        import models.peft

        info = models.peft.prepare(model, cfg.peft)
        log.info("PEFT %s: %d of %d parameters trainable (%.1f %%)", cfg.peft, info["trainable"], info["total"],
                 100 * info["fraction"])
    return model


def _num_mel_bins(cfg: TrainConfig) -> int:
    """The model's mel bins (they set the front end) without building the full-size model twice."""
    if cfg.init:
        ck = read_init_config(cfg.init)
        try:
            return int((ck.get("input") or {}).get("num_mel_bins") or ck["frontend"]["num_mel_bins"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(f"{Path(cfg.init) / 'config.json'}: no frontend.num_mel_bins; accepted: a config.json "
                              f"written by aed train or models.save") from None
    if "num_mel_bins" in cfg.model_kwargs:
        return int(cfg.model_kwargs["num_mel_bins"])
    return int(build_model(replace(cfg, peft=None), ["x"]).num_mel_bins)


def _loss(logits: torch.Tensor, y: torch.Tensor, activation: str, smoothing: float) -> torch.Tensor:
    logits = logits.float()
    if activation == "softmax":
        if smoothing > 0:
            y = y * (1 - smoothing) + smoothing / y.shape[1]
        return torch.sum(-y * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.binary_cross_entropy_with_logits(logits, y)


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    ep = col("epoch")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, col("train_loss"), label="train loss")
    a.plot(ep, col("val_loss"), "o-", label="val loss")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(ep, col("val_accuracy"), "o-", label="val accuracy")
    b.plot(ep, col("val_map"), "o-", label="val mAP")
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_model(model: nn.Module, directory: Path, data: TrainData, cfg: TrainConfig, provenance: dict[str, Any]) -> None:
    import models

    models.save(model, directory, labels=data.labels, frontend=data.frontend,
                window=WindowConfig(cfg.eval_window_s, cfg.eval_hop_s),
                thresholds={"default": 0.5, "per_class": {}}, training=provenance)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) training as configured; returns the last epoch's metrics.

    Raises:
        FileNotFoundError: ``cfg.init`` is not a checkpoint directory (checked before any data is decoded), or the
            data is missing.
        ConfigError: the data's metadata, the settings or the checkpoint are not usable (the message says why).
        AudioError: no training clip could be decoded.
    """
    if cfg.init:
        read_init_config(cfg.init)
    rank, world, device = _dist_setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_all(cfg.seed + rank)
    out = Path(cfg.out)
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    mel = _num_mel_bins(cfg)
    data = load_train_data(cfg, num_mel_bins=mel)
    model = build_model(cfg, data.labels).to(device)
    batcher = ClipBatcher(data.train_feats, data.train_labels, len(data.labels), data.frontend, cfg.augment,
                          data.noise_feats)
    n_train = len(data.train_feats)
    steps_per_epoch = cfg.steps_per_epoch or max(1, n_train // (cfg.batch_size * world))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    start_epoch, step, best = 0, 0, -1.0
    history: list[dict[str, Any]] = []
    if cfg.resume and (out / "last" / "state.json").is_file():
        msd, esd, otensors, st = load_state(out / "last")
        model.load_state_dict(msd, strict=True)
        if ema is not None and esd is not None:
            ema.shadow = {k: v.to(device) for k, v in esd.items()}
            ema.updates = st.get("ema_updates", 0)
        restore_optimizer(opt, otensors, st["optimizer"])
        start_epoch, step, best = st["epoch"], st["step"], st.get("best_val_accuracy", -1.0)
        history = st.get("history", [])
        if main:
            log.info("resumed from %s at epoch %d, step %d", out / "last", start_epoch, step)
    elif main:
        (out / "metrics.csv").unlink(missing_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
    if ema is not None:
        ema.shadow = {k: v.to(device) for k, v in ema.shadow.items()}

    net: nn.Module = _Logits(model)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    if main:
        (out / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "world_size": world,
                                                     "labels": data.labels,
                                                     "frontend": data.frontend.to_dict()}, indent=1))
    fps = data.frontend.frames_per_second
    metrics: dict[str, Any] = {}
    t_loop = time.time()  # ETA: training time of this process only (no data loading, no earlier run)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n_train, generator=gen)
        gen_rank = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) * 131 + rank)
        torch.manual_seed(cfg.seed * 7919 + epoch * 31 + rank)
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", main and cfg.progress)
        t0, seen, loss_sum = time.time(), 0, 0.0
        for i in range(steps_per_epoch):
            lo = (i * world + rank) * cfg.batch_size
            idx = [int(order[j % n_train]) for j in range(lo, lo + cfg.batch_size)]
            frames = draw_window_frames(gen_rank, cfg.augment.min_window_s, cfg.augment.max_window_s, fps,
                                        model.t_min, model.t_max)
            x, y = batcher.batch(idx, frames, gen_rank, augment=True)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = cfg.lr * cosine_schedule(step, total_steps, warmup, cfg.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = net(x)
            loss = _loss(logits, y, cfg.output_activation, cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(model)
            step += 1
            seen += len(idx) * world
            loss_sum += loss.item()
            if bar is not None:
                el = time.time() - t0
                done_here = step - start_epoch * steps_per_epoch
                eta = (time.time() - t_loop) / max(1, done_here) * (total_steps - step)
                bar.set_postfix(loss=f"{loss_sum / (i + 1):.3f}", clips_s=f"{seen / max(el, 1e-9):.1f}",
                                lr=f"{lr:.2e}", eta_run=f"{eta / 60:.1f}m")
                bar.update(1)
        if bar is not None:
            bar.close()
        train_time = time.time() - t0
        metrics = {"epoch": epoch + 1, "step": step, "lr": lr, "train_loss": loss_sum / steps_per_epoch,
                   "train_clips_per_s": seen / max(train_time, 1e-9), "epoch_seconds": train_time}
        if world > 1:
            torch.distributed.barrier()
        if main:
            eval_model = model
            if ema is not None:
                saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
                ema.copy_to(model)
            last_epoch = epoch + 1 == cfg.epochs
            if data.val_feats and ((epoch + 1) % max(1, cfg.val_every) == 0 or last_epoch):
                metrics.update(_validate(eval_model, data, cfg, device))
            best_now = metrics.get("val_accuracy", -1.0 if data.val_feats else -metrics["train_loss"])
            provenance = {"train_config": cfg.to_dict(), "epoch": epoch + 1, "step": step, "world_size": world,
                          "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                          "train_clips": n_train, "val_clips": len(data.val_feats),
                          "skipped_files": data.skipped, "seconds": time.time() - t_start,
                          "device": _device_name(device)}
            if best_now > best:
                best = best_now
                _save_model(model, out / "best", data, cfg, provenance)
            metrics["best_val_accuracy"] = best
            _save_model(model, out / "final", data, cfg, provenance)
            if ema is not None:
                model.load_state_dict(saved, strict=True)
            history.append(metrics)
            _append_metrics(out, metrics)
            _plot_curves(history, out / "learning_curves.png")
            save_state(out / "last", model.state_dict(), None if ema is None else ema.shadow, opt,
                       {"epoch": epoch + 1, "step": step, "best_val_accuracy": best, "history": history,
                        "ema_updates": 0 if ema is None else ema.updates, "train_config": cfg.to_dict()})
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v
                                                 for k, v in metrics.items()})
        if world > 1:
            torch.distributed.barrier()
    if main and cfg.export and (out / "best").is_dir():
        _export(out / "best", Path(cfg.export))
    return TrainResult(epoch=cfg.epochs, step=step, metrics=metrics, best_val_accuracy=best, out=out,
                       seconds=time.time() - t_start)


def _validate(model: nn.Module, data: TrainData, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    feats, labels = data.val_feats, np.asarray(data.val_labels)
    if cfg.max_val_clips:
        feats, labels = feats[:cfg.max_val_clips], labels[:cfg.max_val_clips]
    win, hop = WindowConfig(cfg.eval_window_s, cfg.val_hop_s).frames(data.frontend)
    scores, logp = clip_scores(model, feats, win, hop, device=device, return_log=True)
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
