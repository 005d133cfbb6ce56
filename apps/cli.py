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

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ["devices", "models", "detect", "listen", "monitor", "profile", "export", "build_engine", "train",
               "evaluate", "import_checkpoint"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aed", description="Streaming, real-time audio event detection.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        modname = f"apps.cmd_{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # subcommand not part of this build
            raise
        mod.register(sub)
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
    except (FileNotFoundError, ValueError, TypeError, ImportError, RuntimeError, OSError) as e:
        if args.verbose >= 2:
            raise
        print(f"aed {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
