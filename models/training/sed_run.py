"""Command line for the detection recipe (:mod:`models.training.sed`).

Usage (the selection runs and the shipped run, see MODEL_CARD.md):
    python -m models.training.sed_run --model mn04 --out runs/sel_mn04 --epochs 30
    python -m models.training.sed_run --model datar_mn04 --out runs/sel_datar --epochs 30
    python -m models.training.sed_run --model datar_mn04 --train-folds 1 2 3 4 --val-folds --out runs/ship
"""
from __future__ import annotations

import argparse
import json
import logging

from .sed import SedConfig, train_sed


def apply_settings(cfg: SedConfig, settings: list[str]) -> SedConfig:
    """``cfg`` with ``FIELD=JSON`` settings applied; an unknown field or a bad value is a one-line ConfigError."""
    from dataclasses import fields, replace

    from realtime.errors import ConfigError

    names = {f.name for f in fields(SedConfig)}
    changes = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(names)}")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value                   # a bare string, e.g. --set noise_dir=/data/noise
    return replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    d = SedConfig()
    p = argparse.ArgumentParser(prog="python -m models.training.sed_run", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=d.model)
    p.add_argument("--model-kwargs", default="{}", help="JSON object of constructor arguments")
    p.add_argument("--out", default=d.out)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--train-folds", type=int, nargs="+", default=d.train_folds)
    p.add_argument("--val-folds", type=int, nargs="*", default=d.val_folds)
    p.add_argument("--pretrained", default=d.pretrained, help="EfficientAT .pt checkpoint ('' for none)")
    p.add_argument("--distill-from", default=None, help="a trained aed checkpoint to distil clip scores from")
    p.add_argument("--lr-pretrained", type=float, default=d.lr_pretrained)
    p.add_argument("--lr-new", type=float, default=d.lr_new)
    p.add_argument("--classes", nargs="+", default=None, help="train on these ESC-50 classes only")
    p.add_argument("--exclude-classes", nargs="+", default=None, help="train on every ESC-50 class but these")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="any other recipe field of models.training.sed.SedConfig, e.g. --set mix_prob=0.4")
    a = p.parse_args(argv)
    classes = a.classes
    if a.exclude_classes:
        from .data import load_esc50

        every = load_esc50(d.data, folds=[], licenses=None).labels
        classes = [c for c in (classes or every) if c not in set(a.exclude_classes)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = SedConfig(model=a.model, model_kwargs=json.loads(a.model_kwargs), out=a.out, epochs=a.epochs,
                    steps_per_epoch=a.steps_per_epoch, train_folds=a.train_folds, val_folds=a.val_folds,
                    pretrained=a.pretrained or None, distill_from=a.distill_from, lr_pretrained=a.lr_pretrained,
                    lr_new=a.lr_new, classes=classes, seed=a.seed, threads=a.threads, val_every=a.val_every, resume=not a.no_resume)
    cfg = apply_settings(cfg, a.set)
    print(train_sed(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
