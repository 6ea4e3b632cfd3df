"""Prometheus metrics refreshed from the store and scraped over HTTP."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from choreoscope.collector import metrics
from choreoscope.collector.analyze import AnalysisOptions, analyze
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import (
    anomalies,
    consumer_lag,
    events,
    flows,
    outbox_sources,
    spans,
    trace_fetches,
)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("choreoscope_")}


def fill(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(events.insert(), [
            {"topic": "orders", "partition": 0, "offset": i, "flow_id": "f1",
             "observed_at_ms": 1, "envelope": "binary", "data_truncated": False}
            for i in range(3)])
        conn.execute(anomalies.insert(), [
            {"key": f"k{i}", "kind": kind, "detail": "d", "detected_at_ms": 1}
            for i, kind in enumerate(["duplicate", "duplicate", "stuck_flow"])])
        conn.execute(flows.insert(), [
            {"correlation_id": f"c{i}", "status": status, "started_at_ms": 1,
             "last_seen_at_ms": 1, "duration_ms": 0, "event_count": 1, "services": "[]",
             "event_types": "[]", "trace_ids": "[]", "variant": "", "updated_at_ms": 1}
            for i, status in enumerate(["completed", "stuck", "stuck"])])
        now_ms = int(time.time() * 1000)
        conn.execute(outbox_sources.insert(), [
            {"source": "orders-db", "table_name": "outbox", "reachable": True,
             "last_poll_ms": now_ms, "last_ok_ms": now_ms - 500, "pending": 4, "dead": 1,
             "oldest_pending_age_s": 42.5},
            {"source": "billing-db", "table_name": "outbox", "reachable": False,
             "last_poll_ms": now_ms, "last_ok_ms": None, "pending": None, "dead": None,
             "oldest_pending_age_s": None},
            # answered its last poll, 10 minutes ago: no collector polls it any more
            {"source": "gone-db", "table_name": "outbox", "reachable": True,
             "last_poll_ms": now_ms - 600_000, "last_ok_ms": 1_764_000_000_000, "pending": 2,
             "dead": 0, "oldest_pending_age_s": 18.5}])
        conn.execute(consumer_lag.insert(), [
            {"group_name": "billing", "topic": "orders", "partition": 1, "committed": 10,
             "end_offset": 17, "lag": 7, "measured_at_ms": 1}])
        conn.execute(spans.insert(), [
            {"trace_id": "a" * 32, "span_id": "b" * 16, "name": "process orders",
             "kind": "consumer", "start_us": 1, "duration_us": 1, "status": "ok",
             "out_of_order": False, "origin": "otlp", "received_at_ms": 1}])
        conn.execute(trace_fetches.insert(), [
            {"trace_id": "a" * 32, "first_seen_ms": 1, "last_event_ms": 1, "next_fetch_ms": 1,
             "attempts": 0, "status": "found", "span_count": 1}])
    store.set_meta("otlp.spans_dropped", "5")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/m.db").create()


def test_scrape_shows_the_store(store: Store) -> None:
    """Every metric is served with the store's figures, on a registry of its own."""
    fill(store)
    registry = metrics.new_registry()
    snap = metrics.update_from_store(store, registry)
    assert snap.up and snap.events_ingested == 3
    server = metrics.start_metrics_server(registry, 0)
    try:
        samples = scrape(server.port)
    finally:
        server.stop()
    expected = {
        ("choreoscope_store_up", ()): 1.0,
        ("choreoscope_events_ingested_total", ()): 3.0,
        ("choreoscope_spans_stored_total", (("origin", "jaeger"),)): 0.0,
        ("choreoscope_spans_stored_total", (("origin", "otlp"),)): 1.0,
        ("choreoscope_spans_dropped_total", ()): 5.0,
        ("choreoscope_anomalies", (("kind", "duplicate"),)): 2.0,
        ("choreoscope_anomalies", (("kind", "stuck_flow"),)): 1.0,
        ("choreoscope_anomalies", (("kind", "out_of_order"),)): 0.0,
        ("choreoscope_flows", (("status", "completed"),)): 1.0,
        ("choreoscope_flows", (("status", "stuck"),)): 2.0,
        ("choreoscope_flows", (("status", "failed"),)): 0.0,
        ("choreoscope_stuck_flows", ()): 2.0,
        ("choreoscope_trace_fetches", (("status", "found"),)): 1.0,
        ("choreoscope_outbox_oldest_pending_age_seconds", (("source", "orders-db"),)): 42.5,
        ("choreoscope_outbox_pending", (("source", "orders-db"),)): 4.0,
        ("choreoscope_outbox_dead", (("source", "orders-db"),)): 1.0,
        ("choreoscope_outbox_reachable", (("source", "orders-db"),)): 1.0,
        ("choreoscope_outbox_reachable", (("source", "billing-db"),)): 0.0,
        ("choreoscope_outbox_reachable", (("source", "gone-db"),)): 0.0,
        ("choreoscope_outbox_last_ok_timestamp_seconds", (("source", "gone-db"),)): 1.764e9,
        ("choreoscope_consumer_lag",
         (("group", "billing"), ("partition", "1"), ("topic", "orders"))): 7.0,
    }
    assert {k: samples.get(k) for k in expected} == expected
    # Never polled successfully: no backlog figure at all (an age of 0 would read as healthy).
    assert [k for k in samples if ("source", "billing-db") in k[1]] == [
        ("choreoscope_outbox_reachable", (("source", "billing-db"),))]
    assert len([k for k in samples if k[0] == "choreoscope_anomalies"]) == 8


def test_the_last_analysis_pass_is_served_once_there_is_one(store: Store) -> None:
    """When flows were last analysed and how long it took; absent before the first pass."""
    fill(store)
    registry = metrics.new_registry()
    metrics.update_from_store(store, registry)
    names = {m.name for m in registry.collect()}
    assert "choreoscope_analysis_last_pass_timestamp_seconds" not in names
    result = analyze(store, AnalysisOptions(), now_ms=1_795_000_000_123)
    snap = metrics.update_from_store(store, registry)
    assert (snap.analysed_at_ms, snap.analysis_s) == (1_795_000_000_123,
                                                      round(result.elapsed_s, 3))
    values = {s.name: s.value for m in registry.collect() for s in m.samples}
    assert values["choreoscope_analysis_last_pass_timestamp_seconds"] == 1_795_000_000.123
    assert values["choreoscope_analysis_last_pass_duration_seconds"] == round(result.elapsed_s, 3)


def test_refresh_replaces_old_labels_and_survives_a_broken_store(store: Store,
                                                                 tmp_path: Path) -> None:
    """A refresh drops series that left the store; a failing one keeps figures and reports down."""
    fill(store)
    registry = metrics.new_registry()
    metrics.update_from_store(store, registry)
    with store.engine.begin() as conn:
        conn.execute(consumer_lag.delete())
    metrics.update_from_store(store, registry)
    broken = Store(f"sqlite:///{tmp_path}/empty.db")  # no tables
    assert metrics.update_from_store(broken, registry).up is False
    server = metrics.start_metrics_server(registry, 0, "127.0.0.1")
    try:
        samples = scrape(server.port)
    finally:
        server.stop()
    assert not [k for k in samples if k[0] == "choreoscope_consumer_lag"]
    assert samples[("choreoscope_store_up", ())] == 0.0
    assert samples[("choreoscope_events_ingested_total", ())] == 3.0


def test_default_registry_and_port_first_form(store: Store) -> None:
    """start_metrics_server(port, host) serves the module's REGISTRY, updated by default."""
    fill(store)
    metrics.update_from_store(store)
    server = metrics.start_metrics_server(0, "127.0.0.1")
    try:
        assert scrape(server.port)[("choreoscope_events_ingested_total", ())] == 3.0
    finally:
        server.stop()


def test_bad_arguments_are_rejected(store: Store) -> None:
    """A foreign registry or a bad port fails with what was expected."""
    from prometheus_client import CollectorRegistry

    with pytest.raises(ValueError, match=r"expected a registry made by metrics\.new_registry"):
        metrics.update_from_store(store, CollectorRegistry())
    with pytest.raises(ValueError, match="expected a port number 0-65535, got 70000"):
        metrics.start_metrics_server(70000)
    with pytest.raises(TypeError, match="expected a CollectorRegistry or a port number, got True"):
        metrics.start_metrics_server(True)


@pytest.mark.postgres
def test_refresh_from_postgres(postgres_url: str) -> None:
    """The aggregate queries give the same figures on PostgreSQL."""
    pg = Store(postgres_url).create()
    try:
        fill(pg)
        snap = metrics.update_from_store(pg, metrics.new_registry())
    finally:
        pg.dispose()
    assert (snap.up, snap.events_ingested, snap.spans_dropped) == (True, 3, 5)
    assert snap.anomalies == {"duplicate": 2, "stuck_flow": 1}
    assert snap.flows == {"completed": 1, "stuck": 2}
    assert snap.consumer_lag == [("billing", "orders", 1, 7)]
    assert [(o["source"], o["reachable"], o["stale"]) for o in snap.outbox] == [
        ("billing-db", False, False), ("gone-db", True, True), ("orders-db", True, False)]


def test_retention_never_lowers_the_stored_ever_counters(store: Store) -> None:
    """Pruned events and spans still count in the `_total` counters (a counter that went down
    would read as a reset); the stored-now gauge shows what is left."""
    from choreoscope.collector.retention import DAY_MS, prune

    fill(store)  # 3 events and 1 OTLP span, all stored at the epoch's first millisecond
    registry = metrics.new_registry()
    before = metrics.update_from_store(store, registry)
    assert prune(store, 1, now_ms=2 * DAY_MS) == {
        "events": 3, "spans": 1, "trace_fetches": 1, "anomalies": 3}
    after = metrics.update_from_store(store, registry)
    assert (before.events_ingested, before.events_stored, before.spans_stored["otlp"]) == (3, 3, 1)
    assert (after.events_ingested, after.events_stored, after.spans_stored["otlp"]) == (3, 0, 1)
    server = metrics.start_metrics_server(registry, 0)
    try:
        samples = scrape(server.port)
    finally:
        server.stop()
    assert (samples[("choreoscope_events_ingested_total", ())],
            samples[("choreoscope_events_stored", ())],
            samples[("choreoscope_spans_stored_total", (("origin", "otlp"),))]) == (3.0, 0.0, 1.0)
