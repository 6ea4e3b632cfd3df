"""Start and stop everything `choreoscope demo` runs, as child processes it owns.

Order of start: the embedded broker, the collector (with its OTLP receiver, or reading Jaeger),
the shop's services, the dashboard. Every child is in its own process group and is told to
die with the demo, so Ctrl-C (or a killed demo) leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select

from choreoscope.instrumentation import Outbox

from ..broker import EmbeddedBroker, _die_with_parent, free_port
from ..store import Store
from ..store.schema import anomalies, events, flows

# The shop's topics, created up front as an operator would (see shop/__init__.py).
TOPICS = ("orders", "payments", "inventory", "shipments", "order-cancellations", "notifications",
          "pricing")
SERVICES = (
    "order_service",
    "payment_service",
    "inventory_service",
    "shipping_service",
    "notification_service",
    "pricing_legacy",
)


@dataclass
class DemoOptions:
    rate: float = 5.0
    duration: float | None = None  # seconds; None runs until Ctrl-C
    chaos: str = "mild"
    dashboard: bool = True
    dashboard_port: int = 8501
    store: str | None = None  # default: a fresh SQLite file in the work directory
    workdir: Path = field(default_factory=lambda: Path("choreoscope-demo"))
    jaeger: str | None = None  # Jaeger query URL (16686); the collector reads traces from it
    jaeger_ui: str | None = None
    jaeger_otlp: str | None = None  # where services export spans when Jaeger is used
    stuck_after: float = 20.0
    progress_every: float = 10.0


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.o = options
        self.broker = EmbeddedBroker()
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.store_url = options.store or f"sqlite:///{(options.workdir / 'store.db').resolve()}"
        self.otlp_port = 0
        self.logs = options.workdir / "logs"
        self.collect_args: list[str] = []  # the collector's options, for the final pass

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        o = self.o
        if o.workdir.exists():
            shutil.rmtree(o.workdir)  # the broker starts empty: so do the store and the outbox
        self.logs.mkdir(parents=True)
        self.broker.start()
        create_topics(self.broker.bootstrap, TOPICS)
        print(f"broker        {self.broker.bootstrap} (embedded, in memory)", flush=True)

        # The order service's outbox table, made before the collector watches it: a first
        # poll before the service made it would show the outbox unreachable for a while.
        shop_db = (o.workdir / "order-service.db").resolve()
        Outbox(f"sqlite:///{shop_db}", service="order-service").create_table()

        collect = ["collect", "--bootstrap", self.broker.bootstrap, "--group", "choreoscope-demo",
                   "--stuck-after", str(o.stuck_after),
                   # The embedded broker's group joins take about half the session timeout.
                   "--kafka-option", "session.timeout.ms=6000",
                   "--kafka-option", "heartbeat.interval.ms=1000",
                   "--outbox", f"order-service=sqlite:///{shop_db}"]
        self.collect_args = [*collect, "--otlp-port", "0"]  # + --jaeger: the final pass's
        if o.jaeger:
            self.collect_args += ["--jaeger", o.jaeger]
            collect += ["--jaeger", o.jaeger, "--otlp-port", "0"]
            otlp_endpoint = o.jaeger_otlp or _jaeger_otlp(o.jaeger)
        else:
            self.otlp_port = free_port()
            collect += ["--otlp-port", str(self.otlp_port)]
            otlp_endpoint = f"http://127.0.0.1:{self.otlp_port}"
        self._spawn("collector", [sys.executable, "-m", "choreoscope.collector.cli",
                                  "--store", self.store_url, *collect])
        print(f"collector     store {_safe(self.store_url)}; spans to {otlp_endpoint}", flush=True)
        if not o.jaeger:
            _wait_port(self.otlp_port, 30, self.children["collector"])

        for name in SERVICES:
            cmd = [sys.executable, "-m", f"choreoscope.collector.demo.shop.{name}",
                   "--bootstrap", self.broker.bootstrap, "--chaos", o.chaos,
                   "--otlp-endpoint", otlp_endpoint]
            if name == "order_service":
                cmd += ["--db", str(shop_db), "--rate", str(o.rate)]
            self._spawn(name.replace("_", "-"), cmd)
        print(f"shop          {len(SERVICES)} services, {o.rate:g} orders/s, chaos {o.chaos}", flush=True)

        if o.dashboard:
            cmd = [sys.executable, "-m", "choreoscope.collector.cli", "--store", self.store_url,
                   "dashboard", "--port", str(o.dashboard_port)]
            if o.jaeger_ui:
                cmd += ["--jaeger-ui", o.jaeger_ui]
            self._spawn("dashboard", cmd)
            print(f"dashboard     http://127.0.0.1:{o.dashboard_port}", flush=True)
        if o.jaeger_ui:
            print(f"jaeger        {o.jaeger_ui}", flush=True)
        print(f"logs          {self.logs.resolve()}", flush=True)

    def run(self) -> int:
        """Run until the duration is over or Ctrl-C / SIGTERM; print progress on the way."""
        stop = {"now": False}

        def on_signal(*_: object) -> None:
            stop["now"] = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            started = time.monotonic()
            next_progress = started + self.o.progress_every
            while not stop["now"]:
                if self.o.duration is not None and time.monotonic() - started >= self.o.duration:
                    break
                dead = [n for n, p in self.children.items() if p.poll() is not None]
                if dead:
                    print(f"stopped unexpectedly: {', '.join(dead)} (see {self.logs})", flush=True)
                    return 1
                if time.monotonic() >= next_progress:
                    print(self.progress(), flush=True)
                    next_progress += self.o.progress_every
                time.sleep(0.2)
            return 0
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)

    def stop(self) -> None:
        """SIGTERM every child (services first, the broker last), then SIGKILL what is left."""
        order = [n for n in self.children if n not in ("collector", "dashboard")]
        order += [n for n in ("dashboard", "collector") if n in self.children]
        for name in order:
            _signal(self.children[name], signal.SIGTERM)
            if name in ("collector",):
                _wait(self.children[name], 20)  # let it flush its last batch
                self.final_pass()
        deadline = time.monotonic() + 10
        for proc in self.children.values():
            _wait(proc, max(0.1, deadline - time.monotonic()))
        for proc in self.children.values():
            if proc.poll() is None:
                _signal(proc, signal.SIGKILL)
                _wait(proc, 5)
        self.broker.stop()

    def final_pass(self) -> None:
        """`collect --once` after the services and the collector stopped: it stores what the
        services sent in their last moments and analyses everything, so the store left behind
        (what `choreoscope flows` shows afterwards) has no event outside a flow."""
        if not self.collect_args:
            return
        print("final pass    storing the last events and analysing them", flush=True)
        self._spawn("collector-final", [sys.executable, "-m", "choreoscope.collector.cli",
                                        "--store", self.store_url, *self.collect_args, "--once"])
        _wait(self.children["collector-final"], 60)

    def pids(self) -> list[int]:
        pids = [p.pid for p in self.children.values()]
        return pids

    # -- helpers -------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.children[name] = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def progress(self) -> str:
        try:
            store = Store(self.store_url, readonly=True)
            with store.engine.connect() as conn:
                n_events = conn.execute(select(func.count()).select_from(events)).scalar_one()
                by_status: dict[str, int] = dict(conn.execute(
                    select(flows.c.status, func.count()).group_by(flows.c.status)).all())
                n_anomalies = conn.execute(select(func.count()).select_from(anomalies)).scalar_one()
            store.dispose()
        except Exception as exc:  # noqa: BLE001 - the store may not exist yet
            return f"progress      waiting for the collector ({type(exc).__name__})"
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "none yet"
        return f"progress      {n_events} events stored; flows: {statuses}; {n_anomalies} anomalies"


def create_topics(bootstrap: str, names: tuple[str, ...], partitions: int = 3) -> None:
    """Create the topics (existing ones are left as they are)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names], request_timeout=15)
    for name, future in futures.items():
        try:
            future.result(15)
        except Exception as exc:  # already there is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc


def _jaeger_otlp(jaeger_url: str) -> str:
    host = urlsplit(jaeger_url).hostname or "127.0.0.1"
    return f"http://{host}:4318"


def _safe(url: str) -> str:
    """The URL without a password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
