"""The ``aed`` command: one entry point, one module per subcommand.

Each ``apps/cmd_*.py`` defines ``register(subparsers)``; its parser sets ``func=run`` with
``run(args) -> int``. Heavy imports happen inside ``run``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from apps.errors import UserError
from realtime.errors import AedError

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ["devices", "models", "detect", "listen", "monitor", "profile", "export", "build_engine", "train",
               "evaluate", "import_checkpoint", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aed", description="Streaming, real-time audio event detection.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"apps.cmd_{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage and one error line
        return int(e.code or 0)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"aed {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aed {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``aed detect ... | head``): stop quietly, as Unix tools do
        _silence_stdout()
        return 128 + 13          # what a process killed by SIGPIPE reports
    except ModuleNotFoundError as e:
        if args.verbose >= 2 or not e.name or e.name.split(".")[0] in _OWN_PACKAGES:
            raise                 # one of our own modules missing is a broken install or a bug: keep the traceback
        print(f"aed {args.command}: error: {missing_module_message(e.name.split('.')[0], args.command)}",
              file=sys.stderr)
        return 1
    except (AedError, OSError) as e:
        # the project's own user-error types, and the file system's; anything else is a bug and keeps its traceback
        if args.verbose >= 2:
            raise
        print(f"aed {args.command}: error: {e}", file=sys.stderr)
        return 1


_OWN_PACKAGES = {"apps", "realtime", "models", "engines"}

#: The extra that brings each optional module (``pip install 'aed[EXTRA]'``; ``""`` is the base install).
_MODULE_EXTRAS = {"torch": "torch", "torchaudio": "torch", "safetensors": "torch", "onnx": "torch",
                  "onnxscript": "torch", "tensorrt": "tensorrt", "cuda": "tensorrt", "pyqtgraph": "gui",
                  "PySide6": "gui", "rich": "profile", "psutil": "profile", "matplotlib": "train", "tqdm": "train",
                  "pandas": "train", "sed_eval": "train", "psds_eval": "train", "dcase_util": "train",
                  "tritonclient": "triton", "pytriton": "serve",
                  "onnxruntime": "", "sounddevice": "", "soundfile": "", "soxr": ""}

#: The extras each command needs on top of the base install (pyproject.toml's optional-dependencies). A missing
#: module that one of them brings is answered with all of them, so one install is enough; matplotlib, which
#: both ``profile`` and ``train`` bring, is answered with the command's own.
_COMMAND_EXTRAS = {"models": ("torch",), "export": ("torch",), "import-checkpoint": ("torch",),
                   "train": ("torch", "train"), "evaluate": ("torch", "train"), "profile": ("profile",),
                   "monitor": ("gui",), "build-engine": ("tensorrt",), "serve": ("serve",)}
_EXTRA_ALSO = {"profile": {"matplotlib"}}  # modules an extra brings besides those _MODULE_EXTRAS assigns to it


def missing_module_message(module: str, command: str) -> str:
    """One line for a missing optional module: what needs it and the extra(s) that install it.

    Example:
        >>> missing_module_message("torch", "train").split("install it with: ")[1]
        "pip install 'aed[torch,train]'"
    """
    extra = _MODULE_EXTRAS.get(module)
    wanted = _COMMAND_EXTRAS.get(command, ())
    if any(extra == x or module in _EXTRA_ALSO.get(x, ()) for x in wanted):
        extra = ",".join(wanted)
    how = (f"pip install 'aed[{extra}]'" if extra else "pip install -e . (the base install)") if extra is not None \
        else f"pip install {module}"
    return f"'aed {command}' needs the Python package '{module}', which is not installed; install it with: {how}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not print another Broken pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
