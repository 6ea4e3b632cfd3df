"""The `choreoscope` command line. Each subcommand lives in its own module under `commands/`.

A command module provides `register(subparsers) -> None` (adds its parser and sets
`func=run`) and `run(args) -> int`. Modules are imported lazily so `choreoscope flows` never
pays for what `choreoscope collect` imports.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .store.engine import DEFAULT_URL

# subcommand module under choreoscope.collector.commands, in help order
COMMAND_MODULES = ("demo", "broker", "collect", "dashboard", "query")

STORE_ENV = "CHOREOSCOPE_STORE"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choreoscope",
        description="See your choreographed, Kafka-driven workflows.",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV, DEFAULT_URL),
        help=f"store database URL (env {STORE_ENV}; default {DEFAULT_URL})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"choreoscope.collector.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"choreoscope.collector.commands.{name}":
                raise
            continue  # not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a worker process runs
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `choreoscope flows | head`: stop quietly.
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
