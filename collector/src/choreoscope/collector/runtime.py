"""The running collector: bus ingest in the main thread, everything else beside it.

`Collector(store_url, settings)` wires the pieces of `choreoscope collect`: the bus ingest
(`ingest.BusIngest`), the OTLP/HTTP receiver, the Jaeger trace fetcher, the outbox monitor,
consumer lag, the periodic analysis pass, the Prometheus endpoint and retention pruning.

Ingest never stops because one of the others fails: each periodic task runs guarded in the
maintenance thread, its errors are logged and it is tried again at its next turn.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from sqlalchemy.exc import DBAPIError, DisconnectionError

from .ingest import BusIngest, Redactor
from .settings import CollectSettings
from .store import Store, StoreError, check_url, mask_url

log = logging.getLogger("choreoscope.collector")

RETENTION_INTERVAL_S = 3600.0
_STORE_RETRY_MAX_S = 10.0
_ONCE_STORE_WAIT_S = 15.0  # how long `--once` waits for an unreachable PostgreSQL store


# Analysis passes recompute every flow of the store, so a pass over a large store takes long
# (half a minute to a minute of CPU for a million events here) and competes with ingest: a
# pass that took D seconds is followed by at least 3 D seconds without one, so that analysis
# never takes more than a quarter of the time, however short --analyze-interval is.
ANALYSIS_MAX_SHARE = 0.25


@dataclass
class _Task:
    name: str
    interval_s: float
    run: Callable[[], Any]
    next_at: float = 0.0
    failures: int = 0
    # The largest share of the time the task may run (None: no bound beyond its interval).
    max_share: float | None = None
    last_duration_s: float = 0.0

    def schedule(self, started: float, ended: float) -> float:
        """Set `next_at` after a run from `started` to `ended` (monotonic); returns the rest."""
        self.last_duration_s = max(0.0, ended - started)
        rest = self.interval_s
        if self.max_share is not None:
            rest = max(rest, self.last_duration_s * (1.0 / self.max_share - 1.0))
        self.next_at = ended + rest
        return rest


class Collector:
    """One collector process. `run(stop)` until stop is set, or `run_once()`."""

    def __init__(self, store_url: str, settings: CollectSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store_url = store_url
        self.settings = settings
        self.clock = clock
        self.store: Store | None = None
        self.ingest: BusIngest | None = None
        self.receiver: Any = None
        self.fetcher: Any = None
        self.outbox: Any = None
        self.lag: Any = None
        self.metrics_server: Any = None
        self.metrics_registry: Any = None
        self.tasks: list[_Task] = []
        self.last_analysis: Any = None
        self._maintenance: list[threading.Thread] = []
        self._maintenance_stop = threading.Event()
        # Checked now so that bad configuration fails at start-up, before anything runs.
        check_url(store_url)
        self._outbox_sources = self._parse_outbox()
        if self._outbox_sources and settings.outbox_stuck_after <= 0:
            raise ValueError(f"expected --outbox-stuck-after > 0, got {settings.outbox_stuck_after}")
        self._new_ingest(None).check_config()

    # -- start-up ----------------------------------------------------------------------------

    def open_store(self, stop: threading.Event | None = None,
                   give_up_after_s: float | None = None) -> Store | None:
        """Open and create/upgrade the store, retrying with backoff while a PostgreSQL server
        is unreachable (for at most `give_up_after_s`, if given). Returns None when `stop` is
        set first; raises `StoreError` for what waiting cannot mend: a URL no driver opens, a
        SQLite file that cannot be opened, someone else's tables."""
        delay = 0.5
        deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
        while True:
            try:
                self.store = Store(self.store_url).create()
                return self.store
            except StoreError:
                raise
            except Exception as exc:
                reason = f"cannot open the store {mask_url(self.store_url)}: {_first_line(exc)}"
                if not self._may_come_back(exc) or (
                        deadline is not None and time.monotonic() + delay > deadline):
                    raise StoreError(reason) from exc
                log.warning("%s; retrying in %.1fs", reason, delay)
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                return None
            delay = min(delay * 2, _STORE_RETRY_MAX_S)

    def _may_come_back(self, exc: BaseException) -> bool:
        """A server away or answering an error (another collector creating the same schema
        at the same moment, say), a file locked by another writer, a table another process
        just created; not a bad URL, driver or path."""
        if self.store_url.startswith("sqlite"):
            return "locked" in str(exc) or "already exists" in str(exc)
        return isinstance(exc, DBAPIError | DisconnectionError)

    @property
    def opened(self) -> Store:
        """The store `open_store` opened (the periodic tasks run only after it)."""
        if self.store is None:
            raise RuntimeError("the store is not open yet: call open_store() first")
        return self.store

    def start(self) -> None:
        """Start the optional parts; one that cannot start is logged and left out (a port
        taken for the OTLP receiver or the metrics is an error in the log: ingest goes on,
        but spans sent there, or scrapes, reach whatever holds the port)."""
        s = self.settings
        self.ingest = self._new_ingest(self.opened).start()
        log.info("ingesting %s from %s as group %s into %s", self.ingest.pattern, s.bootstrap,
                 s.group, mask_url(self.store_url))
        if s.otlp_port:
            self._guarded("otlp receiver start", self._start_receiver, logging.ERROR)
        if s.jaeger:
            self._guarded("trace fetcher start", self._start_fetcher)
        if self._outbox_sources:
            from .outbox_monitor import OutboxMonitor

            self.outbox = OutboxMonitor(self.opened, self._outbox_sources,
                                        stuck_after_s=s.outbox_stuck_after,
                                        max_attempts=s.outbox_max_attempts)
        self._guarded("lag monitor start", self._start_lag)
        if s.metrics_port is not None:
            self._guarded("metrics server start", self._start_metrics, logging.ERROR)
        self.tasks = self._plan()

    def _record_intervals(self) -> None:
        """Tell the store's readers how often figures are renewed (query/intervals.py)."""
        from .query import intervals

        intervals.record(self.opened, poll_s=self.settings.poll_interval,
                         analyze_s=self.settings.analyze_interval)

    def _new_ingest(self, store: Store | None) -> BusIngest:
        s = self.settings
        return BusIngest(
            store, bootstrap=s.bootstrap, topics=s.topics, group=s.group, start=s.start,
            redactor=self.redactor(), batch_size=s.batch_size,
            batch_timeout_s=s.batch_timeout, kafka_options=s.kafka_options, clock=self.clock,
        )

    def redactor(self) -> Redactor:
        """The redaction of `--redact`: event data and headers, span attributes."""
        return Redactor(self.settings.redact, self.settings.max_data_bytes)

    def _parse_outbox(self) -> list[Any]:
        if not self.settings.outbox:
            return []
        from .outbox_monitor import parse_outbox_source

        return [parse_outbox_source(spec) for spec in self.settings.outbox]

    def _start_receiver(self) -> None:
        from .traces.receiver import OtlpReceiver

        host, port = self.settings.otlp_host, self.settings.otlp_port
        try:
            self.receiver = OtlpReceiver(self.opened, host=host, port=port,
                                         redactor=self.redactor()).start()
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): spans sent "
                          f"there are lost; {_listen_hint(exc, 'otlp')} (--otlp-port 0: no "
                          "receiver)") from exc
        log.info("OTLP/HTTP receiver on %s", self.receiver.endpoint)

    def _start_fetcher(self) -> None:
        from .traces.fetcher import TraceFetcher

        jaeger = self.settings.jaeger
        if not jaeger:  # started only when --jaeger is set
            raise ValueError("expected a Jaeger URL (--jaeger), got none")
        self.fetcher = TraceFetcher(self.opened, jaeger, redactor=self.redactor())
        log.info("fetching traces from Jaeger at %s", mask_url(self.settings.jaeger))

    def _start_lag(self) -> None:
        from .lag import LagMonitor

        self.lag = LagMonitor(self.opened, self.settings.bootstrap,
                              kafka_options=self.settings.kafka_options)

    def _start_metrics(self) -> None:
        from . import metrics

        self.metrics_registry = metrics.new_registry()
        self.metrics_registry.register(metrics.IngestMetrics(lambda: self.ingest))
        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            self.metrics_server = metrics.start_metrics_server(self.metrics_registry, port, host)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): no "
                          f"metrics; {_listen_hint(exc, 'metrics')}") from exc
        log.info("Prometheus metrics on http://%s:%d/metrics", self.settings.metrics_host,
                 self.metrics_server.port)

    def _plan(self) -> list[_Task]:
        """The periodic tasks, in the order one maintenance pass runs them."""
        s = self.settings
        tasks = []
        if self.outbox is not None:
            tasks.append(_Task("outbox poll", s.poll_interval, self.outbox.poll_once))
        if self.fetcher is not None:
            tasks.append(_Task("trace fetch", s.analyze_interval, self.fetcher.run_once))
        if self.receiver is not None:
            tasks.append(_Task("otlp flush", s.analyze_interval, self.receiver.flush))
        # Retention before analysis: a pass of every task in turn (`collect --once`) leaves
        # no flow whose events were just pruned.
        if s.retention > 0:
            tasks.append(_Task("retention", RETENTION_INTERVAL_S, self.prune))
        tasks.append(_Task("analysis", s.analyze_interval, self.analyze,
                           max_share=ANALYSIS_MAX_SHARE))
        if self.lag is not None:
            tasks.append(_Task("consumer lag", s.poll_interval, self.lag.poll_once))
        if self.metrics_registry is not None:
            tasks.append(_Task("metrics", s.analyze_interval, self.update_metrics))
        return tasks

    # -- the periodic work -------------------------------------------------------------------

    def analyze(self) -> Any:
        """One analysis pass; a stop of the collector ends it early (see `analyze`)."""
        from .analyze import AnalysisInterrupted, AnalysisOptions, analyze

        s = self.settings
        options = AnalysisOptions(stuck_after_s=s.stuck_after, skew_s=s.skew,
                                  orphan_horizon_s=s.orphan_after,
                                  untraced_grace_s=s.untraced_after,
                                  stuck_after_by_type=dict(s.stuck_after_type),
                                  jaeger_enabled=bool(s.jaeger))
        try:
            self.last_analysis = analyze(self.opened, options, now_ms=int(self.clock() * 1000),
                                         stop=self._maintenance_stop)
        except AnalysisInterrupted:
            log.info("analysis pass ended early: the collector is stopping")
            return None
        return self.last_analysis

    def prune(self) -> dict[str, int]:
        from .retention import prune

        deleted = prune(self.opened, self.settings.retention, now_ms=int(self.clock() * 1000))
        if any(deleted.values()):
            log.info("retention: pruned %s", deleted)
        return deleted

    def update_metrics(self) -> Any:
        from . import metrics

        return metrics.update_from_store(self.opened, self.metrics_registry)

    def maintenance_pass(self, force: bool = False, tasks: list[_Task] | None = None) -> None:
        """Run every task (of `tasks`, default all) that is due (all of them with `force`),
        each guarded."""
        now = time.monotonic()
        for task in self.tasks if tasks is None else tasks:
            if self._maintenance_stop.is_set() and not force:
                return
            if force or now >= task.next_at:
                started = time.monotonic()
                ok = self._guarded(task.name, task.run)
                task.failures = 0 if ok else task.failures + 1
                rest = task.schedule(started, time.monotonic())
                if rest > task.interval_s and not force:  # forced: `--once`, no next pass
                    log.info("%s took %.1fs; the next in %.0fs (at most %.0f%% of the time)",
                             task.name, task.last_duration_s, rest,
                             (task.max_share or 1.0) * 100)

    def _guarded(self, name: str, fn: Callable[[], Any], level: int = logging.WARNING) -> bool:
        try:
            fn()
            return True
        except Exception as exc:  # a side task never stops ingest
            log.log(level, "%s failed: %s: %s", name, type(exc).__name__, _first_line(exc))
            log.debug("%s failure", name, exc_info=True)
            return False

    def start_maintenance(self) -> None:
        """Run the periodic tasks in the background: the analysis pass in a thread of its
        own, so a long pass never holds back the metrics, outbox polls, lag, trace fetches
        and retention (they had frozen for as long as a pass lasted)."""
        analysis = [t for t in self.tasks if t.max_share is not None]
        others = [t for t in self.tasks if t.max_share is None]
        for name, tasks in (("analysis", analysis), ("maintenance", others)):
            if tasks:
                thread = threading.Thread(target=self._maintenance_loop, args=(tasks,),
                                          name=f"choreoscope-{name}", daemon=True)
                thread.start()
                self._maintenance.append(thread)

    def _maintenance_loop(self, tasks: list[_Task]) -> None:
        while not self._maintenance_stop.is_set():
            self.maintenance_pass(tasks=tasks)
            self._maintenance_stop.wait(0.5)

    # -- running -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Ingest until `stop` is set, with the periodic tasks beside; then flush and close."""
        try:
            if self.open_store(stop) is None:
                return 0
        except StoreError as exc:
            log.error("%s", exc)
            return 1
        try:
            self.start()
            assert self.ingest is not None
            # a running collector's, not `--once`'s: no figure of that is renewed after it
            self._guarded("recording the intervals", self._record_intervals)
            self.start_maintenance()
            self.ingest.run(stop)
            log.info("stopping: %d records read, %d new events stored", self.ingest.records,
                     self.ingest.inserted)
        finally:
            self.close()
        return 0

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Ingest what is on the topics now, then one pass of every task; returns 0 (1 when
        the store or the bus cannot be used)."""
        try:
            if self.open_store(stop, give_up_after_s=_ONCE_STORE_WAIT_S) is None:
                return 0
        except StoreError as exc:
            log.error("%s", exc)
            return 1
        try:
            self.start()
            assert self.ingest is not None
            try:
                read = self.ingest.run_to_end(stop)
            except KafkaException as exc:
                log.error("cannot read the bus at %s: %s", self.settings.bootstrap, exc)
                return 1
            log.info("read %d records, %d new events stored", read, self.ingest.inserted)
            if self.fetcher is not None:  # every trace now: there is no later pass to wait for
                self._guarded("trace fetch", self.fetcher.catch_up)
            self.maintenance_pass(force=True)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self._maintenance_stop.set()
        for thread in self._maintenance:
            thread.join(60)
        self._maintenance = []
        if self.ingest is not None:
            self.ingest.close()
        if self.receiver is not None:
            self._guarded("otlp receiver stop", self.receiver.stop)
        if self.outbox is not None:
            self._guarded("outbox monitor close", self.outbox.close)
        if self.metrics_server is not None:
            self._guarded("metrics server stop", self.metrics_server.stop)
        if self.store is not None:
            self.store.dispose()


def _first_line(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy appends SQL and parameters on later lines)."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _listen_hint(exc: OSError, name: str) -> str:
    """What to change when a listener cannot bind: the port when it is taken (or not
    ours to take), else the host, which names no address of this machine."""
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return f"give a free --{name}-port"
    return f"give --{name}-host an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)"
