"""``aed models``: list registered model variants (needs the torch extra)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered model variants")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: *)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from models import list_models
    except ImportError as e:
        raise ImportError(f"listing models needs the torch extra: pip install 'aed[torch]' ({e})") from e
    names = list_models(args.pattern)
    for n in names:
        print(n)
    return 0 if names else 1
