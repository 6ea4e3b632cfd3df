"""Keep `choreoscope collect` running when a native crash kills its process.

The Kafka client of the collector is librdkafka, native code: a fault there kills the whole
process, and with it the OTLP receiver, the analysis and the metrics. One such fault is
reproducible here: on the embedded broker, deleting a topic the collector is subscribed to
makes librdkafka's main thread segfault (in its metadata cache). So `collect` runs the
collector in a worker process and starts a new one when the worker dies by a signal nobody
sent it. Nothing is lost by that: offsets are committed only after their events are stored,
so the new worker reads again what the old one had not stored.

The supervisor passes SIGINT and SIGTERM on to the worker and then exits with the worker's
status; a worker that exits by itself (0, or 1 on a fatal error, 2 on bad settings) is not
restarted either. The worker is killed when the supervisor dies, however it dies.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._lifetime import die_with_parent

log = logging.getLogger("choreoscope.collector")

WORKER_ENV = "CHOREOSCOPE_COLLECT_WORKER"
"""Set to 1 in the worker's environment: it runs the collector instead of supervising."""


def supervise(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    stable_s: float = 60.0,
) -> int:
    """Run `cmd` until it exits by itself or SIGINT/SIGTERM arrives; start it again when it
    dies by a signal nobody sent it, after `backoff_s` doubling up to `max_backoff_s` (back
    to `backoff_s` once a worker ran `stable_s`). Returns the exit status (a signal N as
    128 + N). Call it from the main thread: it installs the SIGINT and SIGTERM handlers."""
    stop = threading.Event()
    worker: subprocess.Popen[bytes] | None = None  # the one running, read by `forward`

    def forward(signum: int, _frame: object) -> None:
        stop.set()
        if worker is not None and worker.poll() is None:
            worker.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        delay = backoff_s
        while True:
            started = time.monotonic()
            worker = _start(cmd, env)
            if stop.is_set():  # a signal came while the worker was starting
                worker.send_signal(signal.SIGTERM)
            code = worker.wait()
            pid = worker.pid
            if code >= 0 or stop.is_set():
                return code if code >= 0 else 128 - code
            if time.monotonic() - started >= stable_s:
                delay = backoff_s
            log.error("collector worker (pid %d) died by %s; starting a new one in %.1fs "
                      "(it reads again what was not stored)", pid, _signal_name(-code), delay)
            if stop.wait(delay):
                return 0
            delay = min(delay * 2, max_backoff_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(cmd: Sequence[str], env: Mapping[str, str] | None) -> subprocess.Popen[bytes]:
    environment: Any = None if env is None else dict(env)
    # preexec_fn is safe here: the supervisor runs no threads.
    worker = subprocess.Popen(list(cmd), env=environment, preexec_fn=_worker_lifetime)
    log.info("collector worker started (pid %d)", worker.pid)
    return worker


def _worker_lifetime() -> None:  # pragma: no cover - runs in the child before exec
    """The worker dies with the supervisor, at once: `collect` killed with SIGKILL stops
    there and then, as a collector without a worker would."""
    die_with_parent(signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def worker_command(argv: Sequence[str], python: str) -> list[str]:
    """The command line of a worker running the same `choreoscope` arguments."""
    return [python, "-m", "choreoscope.collector.cli", *argv]
