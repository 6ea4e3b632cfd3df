"""`choreoscope collect`: read the bus (and the traces, the outbox tables) into the store.

Runs until SIGINT or SIGTERM, then stores and commits the batch in hand and exits 0;
`--once` ingests what is on the topics now, runs one pass of everything else and exits.
`--otlp-port 0` disables the OTLP receiver. Every option also reads `CHOREOSCOPE_<NAME>`
(settings.py); options win over the environment.

Without `--once` the collector runs in a worker process that is started again if a native
crash kills it (supervise.py); `CHOREOSCOPE_COLLECT_WORKER=1` runs it in this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ..settings import SETTINGS, CollectSettings, SettingsError
from ..supervise import WORKER_ENV, supervise, worker_command

# option -> setting name; every option's help is the setting's own doc
_OPTIONS = {
    "--bootstrap": "bootstrap",
    "--topics": "topics",
    "--group": "group",
    "--from": "from",
    "--jaeger": "jaeger",
    "--otlp-port": "otlp_port",
    "--otlp-host": "otlp_host",
    "--outbox": "outbox",
    "--stuck-after": "stuck_after",
    "--stuck-after-type": "stuck_after_type",
    "--outbox-stuck-after": "outbox_stuck_after",
    "--outbox-max-attempts": "outbox_max_attempts",
    "--skew": "skew",
    "--orphan-after": "orphan_after",
    "--untraced-after": "untraced_after",
    "--retention": "retention",
    "--metrics-port": "metrics_port",
    "--metrics-host": "metrics_host",
    "--batch-size": "batch_size",
    "--analyze-interval": "analyze_interval",
    "--poll-interval": "poll_interval",
    "--redact": "redact",
    "--max-data-bytes": "max_data_bytes",
    "--kafka-option": "kafka_option",
}


_METAVARS = {
    "bootstrap": "HOST:PORT", "topics": "REGEX", "group": "G", "from": "earliest|latest",
    "jaeger": "URL", "otlp_port": "P", "otlp_host": "HOST", "outbox": "NAME=DB_URL[#table]",
    "stuck_after": "SECONDS", "stuck_after_type": "TYPE=SECONDS",
    "outbox_stuck_after": "SECONDS", "outbox_max_attempts": "N", "skew": "SECONDS",
    "orphan_after": "SECONDS", "untraced_after": "SECONDS", "retention": "DAYS", "metrics_port": "P",
    "metrics_host": "HOST", "batch_size": "N", "analyze_interval": "SECONDS",
    "poll_interval": "SECONDS", "redact": "REGEX", "max_data_bytes": "BYTES",
    "kafka_option": "KEY=VALUE",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collect", help="read the bus and the traces into the store",
                       description=__doc__.split("\n\n", 1)[0])
    for option, name in _OPTIONS.items():
        setting = SETTINGS[name]
        default = "" if setting.default in (None, ()) else f"; default {setting.default}"
        p.add_argument(option, dest=name, action="append" if setting.repeatable else "store",
                       metavar=_METAVARS[name],
                       help=f"{setting.doc} (env {setting.env}{default})")
    p.add_argument("--once", action="store_true",
                   help="ingest what is on the topics now, analyse once, and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        settings = CollectSettings.resolve(**{name: getattr(args, name) for name in _OPTIONS.values()})
    except (SettingsError, ValueError) as exc:
        print(f"choreoscope collect: {exc}", file=sys.stderr)
        return 2
    argv = getattr(args, "argv", None)
    if not args.once and argv is not None and os.environ.get(WORKER_ENV) != "1":
        return supervise(worker_command(argv, sys.executable),
                         env={**os.environ, WORKER_ENV: "1"})
    from ..runtime import Collector

    try:
        collector = Collector(args.store, settings)
    except (SettingsError, ValueError) as exc:
        print(f"choreoscope collect: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("choreoscope.collector").info(
            "%s received: finishing the batch in hand", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    if args.once:
        return collector.run_once(stop)
    return collector.run(stop)
