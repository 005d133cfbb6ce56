"""Options and set-up shared by the subcommands that run a detector."""
from __future__ import annotations

import argparse
import logging

from apps.errors import UserError
from realtime.detector import ONSET_ANCHORS

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnxruntime", "torch", "tensorrt")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and engine")
    g.add_argument("--model", metavar="PATH", help="checkpoint directory, .onnx or .plan (default: the shipped model)")
    g.add_argument("--engine", choices=ENGINES, default="auto", help="inference backend (default: auto)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads for the engine (default: 1)")


def add_source_args(p: argparse.ArgumentParser, duration_help: str = "stop after S seconds of audio") -> None:
    """Where live audio comes from: a device, or a file replayed at real-time pace."""
    p.add_argument("--device", metavar="N", help="input device index or name (default: the system default)")
    p.add_argument("--source", metavar="FILE", help="replay this file at real-time pace instead of a microphone")
    p.add_argument("--samplerate", type=int, help="device sample rate (default: the device's)")
    p.add_argument("--duration", type=float, metavar="S", help=duration_help)


def parse_device(arg: str | None) -> int | str | None:
    """``--device`` as PortAudio takes it: an index, a name substring, or None for the default."""
    if arg is None:
        return None
    return int(arg) if str(arg).isdigit() else arg


def add_detector_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detection")
    g.add_argument("--window", type=float, metavar="S", help="window length in seconds, 0.5-10 (default: the model's)")
    g.add_argument("--hop", type=float, metavar="S", help="hop between windows in seconds (default: the model's)")
    g.add_argument("--threshold", type=float, metavar="P", help="opening threshold in [0, 1] (default: the model's)")
    g.add_argument("--min-duration", type=float, metavar="S", help="shortest event reported, seconds")
    g.add_argument("--merge-gap", type=float, metavar="S", help="dips shorter than this do not split an event")
    g.add_argument("--onset-anchor", choices=ONSET_ANCHORS,
                   help="time stamp of an onset: the newest hop of the first window over the threshold, or that "
                        "window's centre (default: the model's)")


def open_engine(args: argparse.Namespace):
    """Create the engine named by ``--engine``/``--model`` (the shipped default model if none)."""
    from engines import create_engine, default_model_path

    path = args.model or default_model_path()
    options = {}
    if args.engine in ("auto", "onnxruntime"):
        options["threads"] = args.threads
    return create_engine(args.engine, path, **options)


def detector_config(args: argparse.Namespace, engine, input_rate: int | None = None):
    """The model's own detector settings with the command-line overrides applied."""
    from realtime.config import WindowConfig
    from realtime.detector import DetectorConfig

    base = DetectorConfig.from_model_config(getattr(engine, "config", {}) or {})
    window = base.window
    if args.window is not None or args.hop is not None:
        try:
            window = WindowConfig(window_s=args.window if args.window is not None else window.window_s,
                                  hop_s=args.hop if args.hop is not None else window.hop_s)
        except ValueError as e:
            raise UserError(str(e)) from e
    if args.threshold is not None and not (0.0 <= args.threshold <= 1.0):
        raise UserError(f"--threshold must be in [0, 1], got {args.threshold}")
    for name in ("min_duration", "merge_gap"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0 seconds, got {v}")
    from dataclasses import replace

    kw = {"window": window, "input_rate": input_rate}
    if args.threshold is not None:
        kw["threshold"] = args.threshold
    if args.min_duration is not None:
        kw["min_duration_s"] = args.min_duration
    if args.merge_gap is not None:
        kw["merge_gap_s"] = args.merge_gap
    if getattr(args, "onset_anchor", None):
        kw["onset_anchor"] = args.onset_anchor
    return replace(base, **{k: v for k, v in kw.items() if v is not None})


def make_detector(args: argparse.Namespace, engine, input_rate: int | None = None):
    from realtime.detector import Detector

    try:
        return Detector(engine, detector_config(args, engine, input_rate))
    except ValueError as e:
        raise UserError(str(e)) from e
