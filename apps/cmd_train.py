"""``aed train``: train any registered model (from scratch or a checkpoint) on ESC-50, folder or DCASE data.

Under ``torchrun --nproc_per_node N -m apps.cli train ...`` it runs DistributedDataParallel.

Every default is :class:`models.training.loop.TrainConfig`'s (and its ``AugmentConfig``'s): an option left out is
not passed on, and ``--help`` reads the defaults from there (importing the trainer only when help is asked for).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from dataclasses import replace
from typing import Any

from apps.errors import UserError

__all__ = ["register", "run", "config_from_args"]

#: argparse destination -> TrainConfig attribute (``augment.X``: of its AugmentConfig)
_FIELDS = {
    "model": "model", "init": "init", "peft": "peft", "data": "data", "layout": "layout",
    "train_folds": "train_folds", "val_folds": "val_folds", "licenses": "licenses", "val_data": "val_data",
    "noise_dir": "noise_dir", "out": "out", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
    "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "ema_decay": "ema_decay",
    "label_smoothing": "label_smoothing", "activation": "output_activation", "min_window": "augment.min_window_s",
    "max_window": "augment.max_window_s", "mixup": "augment.mixup_alpha", "noise_prob": "augment.noise_prob",
    "window": "eval_window_s", "hop": "eval_hop_s", "val_hop": "val_hop_s", "val_every": "val_every",
    "steps_per_epoch": "steps_per_epoch", "seed": "seed", "device": "device", "threads": "threads",
    "cache_dir": "cache_dir", "export": "export",
}


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _shown(value: Any) -> str:
    """A TrainConfig value as it is typed on the command line."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "''"
    return str(value)


class _TrainConfigDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows TrainConfig's defaults (the options' own default is None: not given)."""

    def _expand_help(self, action: argparse.Action) -> str:
        if action.dest in _FIELDS:
            from models.training.loop import TrainConfig

            action = copy.copy(action)
            action.default = _shown(_attr(TrainConfig(), _FIELDS[action.dest]))
        return super()._expand_help(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.dest in _FIELDS:
            return (action.help or "") + " (default: %(default)s)"
        return action.help or ""


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (checkpoints every epoch, --resume)",
                       formatter_class=_TrainConfigDefaults,
                       description="Train a registered model on ESC-50 (licence-filtered folds), a folder per class or "
                                   "DCASE strong labels. Writes OUT/last (resumable state), OUT/best and OUT/final "
                                   "(model directories), metrics.csv/jsonl and learning_curves.png.")
    p.add_argument("--model", help="registered model name")
    p.add_argument("--model-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="model keyword argument (JSON value), repeatable, e.g. attn=\"standard\"; checked against "
                        "the model's constructor")
    p.add_argument("--init", metavar="DIR", help="start from this checkpoint directory (fine-tuning)")
    p.add_argument("--peft", choices=["head", "aat", "loaa", "full"],
                   help="parameter-efficient fine-tuning: freeze the backbone and train the head (head), adapters and "
                        "the head (aat, loaa), or everything (full). With --init DIR of a detector (such as "
                        "models/pretrained/aed_default) it retargets it to the classes of --data (a folder per class) "
                        "and writes a small adapter checkpoint with model.onnx")
    p.add_argument("--data", help="dataset root")
    p.add_argument("--layout", choices=["esc50", "folder", "dcase"], help="dataset layout")
    p.add_argument("--train-folds", type=_ints, metavar="1,2,3", help="ESC-50 folds to train on")
    p.add_argument("--val-folds", type=_ints, metavar="4", help="ESC-50 folds to validate on; empty string for none")
    p.add_argument("--licenses", help="ESC-50 clip licences to keep (what shipped weights allow); 'all' keeps all")
    p.add_argument("--val-data", metavar="DIR", help="validation set for the folder/dcase layouts")
    p.add_argument("--noise-dir", help="background recordings for noise augmentation ('' for none)")
    p.add_argument("-o", "--out", help="run directory")
    p.add_argument("--epochs", type=int, help="passes over the training clips")
    p.add_argument("--batch-size", type=int, help="clips per optimiser step and process")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up of the learning rate")
    p.add_argument("--ema-decay", type=float, help="0 disables the EMA")
    p.add_argument("--label-smoothing", type=float, help="softmax label smoothing")
    p.add_argument("--activation", choices=["softmax", "sigmoid"],
                   help="softmax for single-label data (ESC-50), sigmoid for multi-label")
    p.add_argument("--min-window", type=float, metavar="S", help="shortest training window (s)")
    p.add_argument("--max-window", type=float, metavar="S", help="longest training window (s)")
    p.add_argument("--mixup", type=float, metavar="ALPHA", help="mixup Beta alpha; 0 disables")
    p.add_argument("--no-specaugment", action="store_true")
    p.add_argument("--noise-prob", type=float, help="probability of background noise under a clip")
    p.add_argument("--window", type=float, metavar="S", help="inference window saved with the model")
    p.add_argument("--hop", type=float, metavar="S", help="inference hop saved with the model")
    p.add_argument("--val-hop", type=float, metavar="S", help="hop of the windows scored in validation")
    p.add_argument("--val-every", type=int, metavar="N", help="validate every N epochs (and the last)")
    p.add_argument("--steps-per-epoch", type=int, help="none: training clips / (batch size x processes)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir", help="feature cache ('' disables)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--export", metavar="DIR", help="copy the best model here and export model.onnx")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` of the parsed options: TrainConfig's defaults, changed where an option was given."""
    from models.training.loop import TrainConfig

    d = TrainConfig()
    given = {dest: getattr(args, dest) for dest in _FIELDS if getattr(args, dest, None) is not None}
    if "licenses" in given:
        text = given["licenses"].strip()
        given["licenses"] = None if text.lower() == "all" else [s for s in text.split(",") if s]
    for dest in ("noise_dir", "cache_dir"):          # '' switches it off
        if dest in given and not given[dest]:
            given[dest] = None
    aug = {_FIELDS[k].split(".", 1)[1]: v for k, v in given.items() if _FIELDS[k].startswith("augment.")}
    if args.no_specaugment:
        aug.update(freq_mask=0, time_mask_frac=0.0)
    top = {_FIELDS[k]: v for k, v in given.items() if not _FIELDS[k].startswith("augment.")}
    top["model_kwargs"] = {**d.model_kwargs, **dict(args.model_arg)}
    if args.resume:
        top["resume"] = True
    if args.no_amp:
        top["amp"] = False
    if args.no_progress:
        top["progress"] = False
    return replace(d, augment=replace(d.augment, **aug), **top)


def _is_detector(init: str) -> bool:
    """Whether ``--init`` is a sigmoid detector, what retargeting (:mod:`models.training.retarget`) takes (it checks
    the frame head itself)."""
    from models.training.build import read_init_config

    config = read_init_config(init)
    if config.base:
        raise UserError(f"{init} is an adapter checkpoint (trained on {config.base['path']}); start from its base "
                        f"model: --init {config.base['path']}")
    return config.output_activation == "sigmoid"


def retarget_config_from_args(args: argparse.Namespace):
    """The :class:`RetargetConfig` of the parsed options (its defaults where an option was not given)."""
    from models.training.retarget import RetargetConfig

    given = {"init": args.init, "peft": args.peft, "data": args.data, "layout": args.layout or "folder",
             "val_data": args.val_data, "out": args.out or "runs/retarget", "epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "threads": args.threads,
             "min_window_s": args.min_window, "max_window_s": args.max_window}
    if args.noise_dir is not None:
        given["noise_dir"] = args.noise_dir or None
    if args.cache_dir is not None:
        given["cache_dir"] = args.cache_dir or "runs/cache"
    return RetargetConfig(**{k: v for k, v in given.items() if v is not None})


def _run_retarget(args: argparse.Namespace) -> int:
    from models.training.retarget import retarget

    cfg = retarget_config_from_args(args)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    try:
        result = retarget(cfg)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    s = result.summary()
    print(f"trained {s['classes']} classes with --peft {cfg.peft}: {s['trainable']:,} of {s['total']:,} parameters "
          f"({s['trainable_percent']:.2f} %), {s['cpu_minutes']:.1f} CPU minutes ({s['wall_minutes']:.1f} min wall); "
          f"wrote {result.out} (model.safetensors {s['checkpoint_bytes'] / 1024:.0f} KiB + model.onnx)")
    print(json.dumps(s))
    return 0


def run(args: argparse.Namespace) -> int:
    from models.training.loop import train

    try:
        retargeting = bool(args.init and args.peft and _is_detector(args.init))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    if retargeting:
        return _run_retarget(args)
    cfg = config_from_args(args)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    lo, hi = cfg.augment.min_window_s, cfg.augment.max_window_s
    if not (0.5 <= lo <= hi <= 10.0):
        raise UserError(f"windows must satisfy 0.5 <= --min-window <= --max-window <= 10 s, got {lo} and {hi}")
    import models

    if not cfg.init and not models.is_model(cfg.model):
        raise UserError(f"unknown model {cfg.model!r}; known models: {', '.join(models.list_models())}")
    try:
        result = train(cfg)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"out": str(result.out), "epoch": result.epoch, "step": result.step,
                          "best_val_accuracy": result.best_val_accuracy, "seconds": round(result.seconds, 1),
                          **{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}))
    return 0
