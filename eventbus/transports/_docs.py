"""The option tables of ``docs/*.md``, generated from the transports' option specs.

``python -m eventbus.transports._docs`` (``make docs``) rewrites every table between its
``<!-- options: NAME -->`` and ``<!-- /options -->`` markers; ``--check`` only reports the
files that differ (exit status 1), which the test suite runs too.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

import msgspec

from ._kit import option_table

__all__ = ["SPECS", "render"]

#: marker name -> (module, spec class): imported lazily, each transport's extra may be absent
SPECS = {
    "memory": ("eventbus.transports.memory", "Options"),
    "redis": ("eventbus.transports.redis", "Options"),
    "rabbitmq": ("eventbus.transports._rabbit_options", "Options"),
}
FILES = ("docs/memory.md", "docs/redis.md", "docs/rabbitmq.md")

_BLOCK = re.compile(r"(<!-- options: (\w+) [^>]*-->\n)(.*?)(<!-- /options -->)", re.DOTALL)


def _spec(name: str) -> type[msgspec.Struct]:
    module, attr = SPECS[name]
    spec: type[msgspec.Struct] = getattr(importlib.import_module(module), attr)
    return spec


def render(text: str) -> str:
    """``text`` with every marked option table regenerated from its spec.

    Raises:
        KeyError: a marker names no known spec.
    """
    return _BLOCK.sub(lambda m: m[1] + option_table(_spec(m[2])) + m[4], text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventbus.transports._docs")
    parser.add_argument("--check", action="store_true", help="report stale tables, write none")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository's root")
    args = parser.parse_args(argv)
    stale = []
    for name in FILES:
        path = args.root / name
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "stale" if args.check else "rewritten"
    for name in stale:
        print(f"{name}: option table {verb}", file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
