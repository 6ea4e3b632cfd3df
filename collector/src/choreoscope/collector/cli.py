"""The `choreoscope` command line. Each subcommand lives in its own module under `commands/`.

A command module provides `register(subparsers) -> None` (adds its parser and sets
`func=run`) and `run(args) -> int`. Modules are imported lazily so `choreoscope flows` never
pays for what `choreoscope collect` imports.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from .store.engine import DEFAULT_URL

# subcommand module under choreoscope.collector.commands, in help order
COMMAND_MODULES = ("demo", "broker", "collect", "dashboard", "query")

STORE_ENV = "CHOREOSCOPE_STORE"
STORE_HELP = f"store database URL (env {STORE_ENV}; default {DEFAULT_URL})"


class _GivenStore(argparse.Action):
    """`--store URL`, remembering that it was given (the demo's own default differs)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        namespace.store = values
        namespace.store_given = True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choreoscope",
        description="See your choreographed, Kafka-driven workflows.",
    )
    parser.add_argument(
        "--store", action=_GivenStore, default=os.environ.get(STORE_ENV, DEFAULT_URL),
        help=STORE_HELP,
    )
    parser.set_defaults(store_given=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"choreoscope.collector.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"choreoscope.collector.commands.{name}":
                raise
            continue  # not built yet
        module.register(sub)
    # `choreoscope flows --store URL` as well as `choreoscope --store URL flows`
    for name, command in sub.choices.items():
        if name == "broker":  # it keeps its topics in memory: no store
            continue
        with contextlib.suppress(argparse.ArgumentError):  # demo has its own --store
            command.add_argument("--store", action=_GivenStore, default=argparse.SUPPRESS,
                                 help=STORE_HELP)
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
