"""``aed models``: list registered model variants (needs the torch extra).

The tiny ``*_test`` variants exist for the test suite; they are listed only with ``--all``.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered model variants")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: *)")
    p.add_argument("--all", action="store_true", help="also list the tiny *_test variants the test suite uses")
    p.set_defaults(func=run)


def is_internal(name: str) -> bool:
    """Whether ``name`` is one of the tiny variants made for the tests (``*_test``)."""
    return name.endswith("_test")


def run(args) -> int:
    from models import list_models  # a missing torch becomes the CLI's line naming the torch extra

    matched = list_models(args.pattern)
    names = matched if args.all else [n for n in matched if not is_internal(n)]
    for n in names:
        print(n)
    if matched and not names:
        print(f"only internal test variants match {args.pattern!r} ({', '.join(matched)}); pass --all to list them",
              file=sys.stderr)
    return 0 if names else 1
