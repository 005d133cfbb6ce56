"""Options and set-up shared by the subcommands that run a detector."""
from __future__ import annotations

import argparse
import logging

from apps.errors import UserError
from engines import ENGINE_KINDS as ENGINES  # the one list of engine kinds
from realtime.config import ONSET_ANCHORS
from realtime.onsets import ONSET_REFINES

log = logging.getLogger(__name__)


def add_model_args(p: argparse.ArgumentParser, engine_list: bool = False) -> None:
    """The model and engine options every command that runs a model shares.

    ``engine_list``: ``--engines LIST`` instead of ``--engine`` (``aed profile`` compares several in one run; it adds
    the model-free ``loudness`` reference to the kinds).
    """
    g = p.add_argument_group("model and engine")
    g.add_argument("--model", metavar="PATH", help="checkpoint directory, .onnx or .plan (default: the shipped model)")
    if engine_list:
        kinds = ", ".join(k for k in ENGINES if k != "auto")
        g.add_argument("--engines", default="onnxruntime", metavar="LIST",
                       help=f"comma-separated engines compared in one run: {kinds}, and 'loudness' (a model-free "
                            "reference) (default: onnxruntime)")
    else:
        g.add_argument("--engine", choices=ENGINES, default="auto", help="inference backend (default: auto)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads for the engine (default: 1)")
    g.add_argument("--server", metavar="URL", help="with the triton engine: the served model's URL, "
                   "grpc://HOST:8001/MODEL or http://HOST:8000/MODEL (start a server with 'aed serve')")


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


def add_detector_args(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """The detection options every command that runs a detector shares.

    ``sweep``: ``--window`` and ``--hop`` take comma-separated lists (``aed profile`` runs one session per pair).
    """
    g = p.add_argument_group("detection")
    if sweep:
        g.add_argument("--window", metavar="LIST", help="window length(s) in seconds, 0.5-10, e.g. 0.5,1,2 "
                                                        "(default: the model's)")
        g.add_argument("--hop", metavar="LIST", help="hop(s) in seconds, e.g. 0.05,0.1 (default: the model's)")
    else:
        g.add_argument("--window", type=float, metavar="S",
                       help="window length in seconds, 0.5-10 (default: the model's)")
        g.add_argument("--hop", type=float, metavar="S", help="hop between windows in seconds (default: the model's)")
    g.add_argument("--threshold", type=float, metavar="P", help="opening threshold in [0, 1] (default: the model's)")
    g.add_argument("--min-duration", type=float, metavar="S", help="shortest event reported, seconds")
    g.add_argument("--merge-gap", type=float, metavar="S", help="dips shorter than this do not split an event")
    g.add_argument("--onset-anchor", choices=ONSET_ANCHORS,
                   help="time stamp of an onset: the newest hop of the first window over the threshold, or that "
                        "window's centre (default: the model's)")
    g.add_argument("--onset-refine", choices=ONSET_REFINES,
                   help="re-stamp an onset at the strongest rise in level before it ('energy'), or keep the "
                        "tracker's stamp ('none'); when the event is reported does not change (default: the model's)")


def detector_overrides(args: argparse.Namespace) -> dict:
    """The user's detector settings from the command line, by field name (None: keep the model's)."""
    out = {"threshold": getattr(args, "threshold", None), "min_duration_s": getattr(args, "min_duration", None),
           "merge_gap_s": getattr(args, "merge_gap", None), "onset_anchor": getattr(args, "onset_anchor", None),
           "onset_refine": getattr(args, "onset_refine", None)}
    for name in ("window", "hop"):
        v = getattr(args, name, None)
        if v is None or isinstance(v, (int, float)):          # a sweep's lists are the profiler's to expand
            out[f"{name}_s"] = v
    return out


def open_engine(args: argparse.Namespace):
    """Create the engine named by ``--engine``/``--model`` (the shipped default model if none)."""
    from engines import create_engine, default_model_path

    server = getattr(args, "server", None)
    if args.engine == "triton":
        if not server:
            raise UserError("--engine triton needs --server URL, e.g. --server grpc://127.0.0.1:8001/aed_default")
        if args.model:
            raise UserError("--model does not apply with --engine triton: the server's model is used (--server)")
        return create_engine("triton", server)
    if server:
        raise UserError("--server applies only with --engine triton")
    path = args.model or default_model_path()
    # one CPU-thread option for every backend (create_engine maps it; TensorRT ignores it)
    return create_engine(args.engine, path, threads=getattr(args, "threads", None))


def detector_config(args: argparse.Namespace, engine, input_rate: int | None = None):
    """The model's own detector settings with the command-line values over them: the one route,
    ``DetectorConfig.from_model(...).override(...)``; its checks say what is accepted."""
    from realtime.detector import DetectorConfig

    try:
        return DetectorConfig.from_model(getattr(engine, "config", None)).override(
            **detector_overrides(args), input_rate=input_rate)
    except ValueError as e:
        raise UserError(cli_names(str(e))) from e


_CLI_NAMES = {"window_s": "--window", "hop_s": "--hop", "threshold": "--threshold", "min_duration_s": "--min-duration",
              "merge_gap_s": "--merge-gap", "onset_anchor": "--onset-anchor", "onset_refine": "--onset-refine"}


def cli_names(message: str) -> str:
    """A settings error in the user's terms: ``--merge-gap must be ...`` rather than ``merge_gap_s must be ...``."""
    for field, flag in _CLI_NAMES.items():
        if message.startswith(field + " "):
            return flag + message[len(field):]
    return message


def make_detector(args: argparse.Namespace, engine, input_rate: int | None = None):
    from realtime.detector import Detector

    try:
        return Detector(engine, detector_config(args, engine, input_rate))
    except ValueError as e:
        raise UserError(str(e)) from e
