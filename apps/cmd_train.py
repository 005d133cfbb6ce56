"""``aed train``: train any registered model (from scratch or a checkpoint) on ESC-50, folder or DCASE data.

Under ``torchrun --nproc_per_node N -m apps.cli train ...`` it runs DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import json

from apps.errors import UserError

__all__ = ["register", "run"]


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


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (checkpoints every epoch, --resume)",
                       description="Train a registered model on ESC-50 (licence-filtered folds), a folder per class or "
                                   "DCASE strong labels. Writes OUT/last (resumable state), OUT/best and OUT/final "
                                   "(model directories), metrics.csv/jsonl and learning_curves.png.")
    p.add_argument("--model", default="datar_tiny", help="registered model name (default: datar_tiny)")
    p.add_argument("--model-arg", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                   help="model keyword argument (JSON value), repeatable, e.g. attn=\"standard\"")
    p.add_argument("--init", metavar="DIR", help="start from this checkpoint directory (fine-tuning)")
    p.add_argument("--peft", choices=["aat", "loaa"], help="freeze the backbone; train adapters and the head")
    p.add_argument("--data", default="../shared/data/esc50", help="dataset root (default: ../shared/data/esc50)")
    p.add_argument("--layout", choices=["esc50", "folder", "dcase"], default="esc50")
    p.add_argument("--train-folds", type=_ints, default=[1, 2, 3], metavar="1,2,3")
    p.add_argument("--val-folds", type=_ints, default=[4], metavar="4", help="empty string for none")
    p.add_argument("--licenses", default="CC0,CC-BY",
                   help="ESC-50 clip licences to keep (default: CC0,CC-BY, what shipped weights allow); 'all' keeps all")
    p.add_argument("--val-data", metavar="DIR", help="validation set for the folder/dcase layouts")
    p.add_argument("--noise-dir", default="../shared/data/noise", help="background recordings for noise augmentation")
    p.add_argument("-o", "--out", default="runs/train", help="run directory (default: runs/train)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.999, help="0 disables the EMA")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--activation", choices=["softmax", "sigmoid"], default="softmax",
                   help="softmax for single-label data (ESC-50), sigmoid for multi-label")
    p.add_argument("--min-window", type=float, default=0.5, metavar="S", help="shortest training window (s)")
    p.add_argument("--max-window", type=float, default=5.0, metavar="S", help="longest training window (s)")
    p.add_argument("--mixup", type=float, default=0.5, metavar="ALPHA", help="mixup Beta alpha; 0 disables")
    p.add_argument("--no-specaugment", action="store_true")
    p.add_argument("--noise-prob", type=float, default=0.3)
    p.add_argument("--window", type=float, default=1.0, metavar="S", help="inference window saved with the model")
    p.add_argument("--hop", type=float, default=0.1, metavar="S", help="inference hop saved with the model")
    p.add_argument("--val-hop", type=float, default=0.5, metavar="S", help="hop of the windows scored in validation")
    p.add_argument("--val-every", type=int, default=1, metavar="N", help="validate every N epochs (and the last)")
    p.add_argument("--steps-per-epoch", type=int, help="default: training clips / (batch size x processes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir", default="runs/cache", help="feature cache ('' disables)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--export", metavar="DIR", help="copy the best model here and export model.onnx")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.training.augment import AugmentConfig
    from models.training.loop import TrainConfig, train

    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    if not (0.5 <= args.min_window <= args.max_window <= 10.0):
        raise UserError(f"windows must satisfy 0.5 <= --min-window <= --max-window <= 10 s, got "
                        f"{args.min_window} and {args.max_window}")
    import models

    if not args.init and not models.is_model(args.model):
        raise UserError(f"unknown model {args.model!r}; known models: {', '.join(models.list_models())}")
    aug = AugmentConfig(min_window_s=args.min_window, max_window_s=args.max_window, mixup_alpha=args.mixup,
                        freq_mask=0 if args.no_specaugment else AugmentConfig.freq_mask,
                        time_mask_frac=0.0 if args.no_specaugment else AugmentConfig.time_mask_frac,
                        noise_prob=args.noise_prob)
    licenses = None if args.licenses.strip().lower() == "all" else [s for s in args.licenses.split(",") if s]
    cfg = TrainConfig(model=args.model, model_kwargs=dict(args.model_arg), init=args.init, peft=args.peft,
                      data=args.data, layout=args.layout, train_folds=args.train_folds, val_folds=args.val_folds,
                      licenses=licenses, val_data=args.val_data, noise_dir=args.noise_dir or None, out=args.out,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      warmup_epochs=args.warmup_epochs, ema_decay=args.ema_decay,
                      label_smoothing=args.label_smoothing, output_activation=args.activation, seed=args.seed,
                      device=args.device, threads=args.threads, steps_per_epoch=args.steps_per_epoch,
                      eval_window_s=args.window, eval_hop_s=args.hop, val_hop_s=args.val_hop, val_every=args.val_every,
                      augment=aug, cache_dir=args.cache_dir or None, resume=args.resume, amp=not args.no_amp,
                      progress=not args.no_progress, export=args.export)
    try:
        result = train(cfg)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(json.dumps({"out": str(result.out), "epoch": result.epoch, "step": result.step,
                          "best_val_accuracy": result.best_val_accuracy, "seconds": round(result.seconds, 1),
                          **{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}))
    return 0
