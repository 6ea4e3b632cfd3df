"""Prometheus metrics read from the store, so teams alert with what they already run.

`update_from_store(store)` refreshes a snapshot with a few aggregate queries; a scrape serves
the last snapshot (never touching the database). Metrics live in their own registry
(`REGISTRY`, or `new_registry()` for one per collector), never prometheus_client's global one.

    choreoscope_events_ingested_total                      events stored ever (retention
                                                           pruning does not lower it)
    choreoscope_events_stored                              events in the store now
    choreoscope_spans_stored_total{origin}                 spans stored ever (jaeger|otlp)
    choreoscope_spans_dropped_total                        OTLP spans dropped (queue full)
    choreoscope_anomalies{kind}                            anomalies stored, per kind
    choreoscope_flows{status}                              flows per status
    choreoscope_stuck_flows                                flows with status "stuck"
    choreoscope_trace_fetches{status}                      Jaeger trace fetch states
    choreoscope_outbox_oldest_pending_age_seconds{source}  age of the oldest pending outbox row
    choreoscope_outbox_pending{source} / _dead{source}     outbox backlog and dead rows
    choreoscope_outbox_reachable{source}                   1 when the last poll succeeded
                                                           and a collector still polls it
    choreoscope_outbox_last_ok_timestamp_seconds{source}   when the last poll succeeded
    choreoscope_consumer_lag{group,topic,partition}        consumer lag in records
    choreoscope_store_up                                   1 when the last refresh succeeded
    choreoscope_analysis_last_pass_timestamp_seconds       when flows were last analysed
    choreoscope_analysis_last_pass_duration_seconds        how long that pass took

Two more come from the collector process itself (`IngestMetrics`), not from the store: they
must show exactly when the store cannot be written (locked, full, unreachable).

    choreoscope_ingest_store_failures_total                failed attempts to store a batch
    choreoscope_ingest_store_failing                       1 while batches cannot be stored
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from . import retention
from .detect.anomaly import KINDS as ANOMALY_KINDS
from .query import intervals
from .query.outbox import is_stale
from .reconstruct import skip
from .store import Store
from .store.schema import (
    anomalies,
    consumer_lag,
    events,
    flows,
    meta,
    outbox_sources,
    spans,
    trace_fetches,
)
from .traces.sink import ORIGINS as SPAN_ORIGINS

log = logging.getLogger(__name__)

FLOW_STATUSES = ("in_progress", "completed", "stuck", "failed")
FETCH_STATUSES = ("pending", "found", "missing", "error")
SPANS_DROPPED_META_KEY = "otlp.spans_dropped"  # written by traces.receiver


@dataclass
class Snapshot:
    """The figures of one refresh."""

    up: bool = False
    events_ingested: int = 0
    events_stored: int = 0
    spans_stored: dict[str, int] = field(default_factory=dict)
    spans_dropped: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    flows: dict[str, int] = field(default_factory=dict)
    trace_fetches: dict[str, int] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    consumer_lag: list[tuple[str, str, int, int]] = field(default_factory=list)
    analysed_at_ms: int | None = None
    analysis_s: float | None = None


class StoreMetrics(Collector):
    """A prometheus_client collector serving the last `Snapshot` taken from the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()

    def update(self, store: Store) -> Snapshot:
        """Refresh from the store; on a database error keep the last figures and report down."""
        try:
            snap = _read(store)
        except SQLAlchemyError as exc:
            log.warning("metrics refresh failed: %s", exc)
            with self._lock:
                self._snapshot.up = False
                return self._snapshot
        with self._lock:
            self._snapshot = snap
        return snap

    def describe(self) -> Iterator[Metric]:
        return self._families(Snapshot())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self._snapshot
        return self._families(snap)

    def _families(self, snap: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("choreoscope_store_up",
                                "1 when the last refresh from the store succeeded",
                                value=1 if snap.up else 0)
        yield CounterMetricFamily("choreoscope_events_ingested",
                                  "Events stored from the bus, pruned ones included",
                                  value=snap.events_ingested)
        yield GaugeMetricFamily("choreoscope_events_stored", "Events in the store now",
                                value=snap.events_stored)
        stored = CounterMetricFamily("choreoscope_spans_stored", "Spans stored, per origin",
                                     labels=["origin"])
        for origin in SPAN_ORIGINS:
            stored.add_metric([origin], snap.spans_stored.get(origin, 0))
        yield stored
        yield CounterMetricFamily("choreoscope_spans_dropped",
                                  "OTLP spans dropped because the receiver queue was full",
                                  value=snap.spans_dropped)
        kinds = GaugeMetricFamily("choreoscope_anomalies", "Anomalies stored, per kind",
                                  labels=["kind"])
        for kind in sorted(set(ANOMALY_KINDS) | set(snap.anomalies)):
            kinds.add_metric([kind], snap.anomalies.get(kind, 0))
        yield kinds
        by_status = GaugeMetricFamily("choreoscope_flows", "Flows per status", labels=["status"])
        for status in sorted(set(FLOW_STATUSES) | set(snap.flows)):
            by_status.add_metric([status], snap.flows.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("choreoscope_stuck_flows", "Flows with status stuck",
                                value=snap.flows.get("stuck", 0))
        fetches = GaugeMetricFamily("choreoscope_trace_fetches",
                                    "Trace ids seen on the bus, per Jaeger fetch status",
                                    labels=["status"])
        for status in sorted(set(FETCH_STATUSES) | set(snap.trace_fetches)):
            fetches.add_metric([status], snap.trace_fetches.get(status, 0))
        yield fetches
        age = GaugeMetricFamily("choreoscope_outbox_oldest_pending_age_seconds",
                                "Age of the oldest pending outbox row (0 when none; absent before a first successful poll)",
                                labels=["source"])
        pending = GaugeMetricFamily("choreoscope_outbox_pending", "Pending outbox rows",
                                    labels=["source"])
        dead = GaugeMetricFamily("choreoscope_outbox_dead", "Dead outbox rows", labels=["source"])
        reachable = GaugeMetricFamily(
            "choreoscope_outbox_reachable",
            "1 when the outbox database answered the last poll and a collector still polls it "
            "(0 once none has for 3 poll intervals: its other figures are then old)",
            labels=["source"])
        last_ok = GaugeMetricFamily("choreoscope_outbox_last_ok_timestamp_seconds",
                                    "When the outbox database last answered a poll (Unix time)",
                                    labels=["source"])
        for row in snap.outbox:
            labels = [row["source"]]
            if row["pending"] is not None:  # absent, not 0, before a first successful poll
                age.add_metric(labels, float(row["oldest_pending_age_s"] or 0.0))
                pending.add_metric(labels, row["pending"])
            if row["dead"] is not None:
                dead.add_metric(labels, row["dead"])
            reachable.add_metric(labels, 1 if row["reachable"] and not row["stale"] else 0)
            if row["last_ok_ms"] is not None:
                last_ok.add_metric(labels, row["last_ok_ms"] / 1000)
        yield from (age, pending, dead, reachable, last_ok)
        lag = GaugeMetricFamily("choreoscope_consumer_lag",
                                "Records between the committed offset and the end of the partition",
                                labels=["group", "topic", "partition"])
        for group, topic, partition, value in snap.consumer_lag:
            lag.add_metric([group, topic, str(partition)], value)
        yield lag
        # Absent until a first pass: a 0 would read as "analysed in 1970".
        if snap.analysed_at_ms is not None:
            yield GaugeMetricFamily(
                "choreoscope_analysis_last_pass_timestamp_seconds",
                "When the flows and anomalies were last analysed (Unix time); passes over an "
                "unchanged store are skipped", value=snap.analysed_at_ms / 1000)
        if snap.analysis_s is not None:
            yield GaugeMetricFamily("choreoscope_analysis_last_pass_duration_seconds",
                                    "How long the last analysis pass took",
                                    value=snap.analysis_s)


def _read(store: Store) -> Snapshot:
    snap = Snapshot(up=True)
    with store.engine.connect() as conn:
        gone = retention.pruned(conn)
        snap.events_stored = int(conn.execute(select(func.count()).select_from(events))
                                 .scalar() or 0)
        snap.events_ingested = snap.events_stored + gone["events"]
        stored = _counts(conn, spans.c.origin)
        snap.spans_stored = {origin: stored.get(origin, 0) + gone.get(f"spans.{origin}", 0)
                             for origin in {*stored, *SPAN_ORIGINS}}
        snap.anomalies = _counts(conn, anomalies.c.kind)
        snap.flows = _counts(conn, flows.c.status)
        snap.trace_fetches = _counts(conn, trace_fetches.c.status)
        dropped = conn.execute(select(meta.c.value)
                               .where(meta.c.key == SPANS_DROPPED_META_KEY)).scalar()
        snap.spans_dropped = int(dropped) if dropped and str(dropped).isdigit() else 0
        analysed = skip.last_pass(conn.execute(select(meta.c.value)
                                               .where(meta.c.key == skip.STATE_KEY)).scalar())
        if analysed is not None:
            snap.analysed_at_ms, snap.analysis_s = analysed
        poll_s = intervals.recorded(conn).poll_s
        now_ms = int(time.time() * 1000)
        snap.outbox = [dict(r._mapping, stale=is_stale(r.last_poll_ms, now_ms, poll_s))
                       for r in conn.execute(
            select(outbox_sources.c.source, outbox_sources.c.reachable,
                   outbox_sources.c.pending, outbox_sources.c.dead,
                   outbox_sources.c.oldest_pending_age_s, outbox_sources.c.last_poll_ms,
                   outbox_sources.c.last_ok_ms).order_by(outbox_sources.c.source))]
        snap.consumer_lag = [
            (r.group_name, r.topic, int(r.partition), int(r.lag))
            for r in conn.execute(select(consumer_lag).where(consumer_lag.c.lag.is_not(None))
                                  .order_by(consumer_lag.c.group_name, consumer_lag.c.topic,
                                            consumer_lag.c.partition))
        ]
    return snap


def _counts(conn: Any, column: Any) -> dict[str, int]:
    return {str(k): int(n) for k, n in conn.execute(
        select(column, func.count()).group_by(column)) if k is not None}


class IngestMetrics(Collector):
    """The ingest's own figures of storing, read from the running `BusIngest` (None before
    it starts) at each scrape."""

    def __init__(self, ingest_of: Callable[[], Any]) -> None:
        self._ingest_of = ingest_of

    def describe(self) -> Iterator[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._ingest_of())

    def _families(self, ingest: Any) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "choreoscope_ingest_store_failures",
            "Failed attempts to store a batch of events (store unreachable, locked or full)",
            value=getattr(ingest, "store_failures", 0))
        yield GaugeMetricFamily(
            "choreoscope_ingest_store_failing",
            "1 while the ingest cannot store its batches (their offsets wait uncommitted)",
            value=1 if getattr(ingest, "store_failing", False) else 0)


# --- registries and the HTTP endpoint ------------------------------------------------------------

_ATTR = "_choreoscope_store_metrics"


def new_registry() -> CollectorRegistry:
    """A fresh registry holding its own `StoreMetrics`."""
    registry = CollectorRegistry(auto_describe=True)
    collector = StoreMetrics()
    registry.register(collector)
    setattr(registry, _ATTR, collector)
    return registry


REGISTRY = new_registry()


def update_from_store(store: Store, registry: CollectorRegistry | None = None) -> Snapshot:
    """Refresh the metrics of `registry` (default `REGISTRY`) from the store."""
    registry = REGISTRY if registry is None else registry
    collector = getattr(registry, _ATTR, None)
    if collector is None:
        raise ValueError("expected a registry made by metrics.new_registry(), got another one")
    return collector.update(store)


class MetricsServer:
    """The running `/metrics` HTTP endpoint."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics_server(registry: CollectorRegistry | int | None = None, port: int | None = None,
                         host: str = "127.0.0.1") -> MetricsServer:
    """Serve `registry` (default `REGISTRY`) on http://host:port/metrics; port 0 picks one.

    Also accepts `start_metrics_server(port, host)`.
    """
    if isinstance(registry, bool):
        raise TypeError(f"expected a CollectorRegistry or a port number, got {registry!r}")
    if isinstance(registry, int):
        if isinstance(port, str):
            host = port
        registry, port = None, registry
    if port is None or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"expected a port number 0-65535, got {port!r}")
    server, thread = start_http_server(port, addr=host,
                                       registry=REGISTRY if registry is None else registry)
    return MetricsServer(server, thread)
