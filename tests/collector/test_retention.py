"""Retention pruning of events, spans, trace fetches and anomalies."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from choreoscope.collector.retention import DAY_MS, prune
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, spans, trace_fetches

NOW = 1_800_000_000_000


TRACE = {"gone": "a" * 32, "live": "b" * 32, "endless": "c" * 32}


def _fill(store: Store) -> None:
    """Flow `gone` idle for 7.5 days, `live` from 8 days to 6 days ago, `endless` from 15
    days to 1 day ago; a span, a trace fetch and an anomaly of each age."""
    day = DAY_MS
    rows = [("gone", 8 * day), ("gone", 7.5 * day), ("live", 8 * day), ("live", 6 * day),
            ("endless", 15 * day), ("endless", 1 * day)]
    with store.engine.begin() as conn:
        store.insert_ignore(conn, events, [
            {"topic": "t", "partition": 0, "offset": i, "flow_id": flow,
             "trace_id": TRACE[flow], "observed_at_ms": NOW - int(age), "envelope": "binary",
             "data_truncated": False} for i, (flow, age) in enumerate(rows)])
        store.insert_ignore(conn, spans, [
            {"trace_id": trace, "span_id": f"{i:016x}", "name": "process t", "kind": "consumer",
             "start_us": (NOW - age) * 1000, "duration_us": 1, "status": "ok",
             "out_of_order": False, "origin": "otlp", "received_at_ms": NOW}
            for i, (trace, age) in enumerate([(TRACE["gone"], 8 * day), (TRACE["live"], 8 * day),
                                              ("d" * 32, 8 * day), ("d" * 32, 6 * day)])])
        store.insert_ignore(conn, trace_fetches, [
            {"trace_id": f"{i:032x}", "first_seen_ms": ts, "last_event_ms": ts,
             "next_fetch_ms": ts, "attempts": 0, "status": "found", "span_count": 0}
            for i, ts in enumerate((NOW - 8 * day, NOW - 6 * day))])
        store.insert_ignore(conn, anomalies, [
            {"key": f"k{i}", "kind": "orphan", "detail": "d", "correlation_id": flow,
             "detected_at_ms": NOW - age}
            for i, (flow, age) in enumerate([("gone", 8 * day), ("live", 8 * day),
                                             (None, 8 * day), (None, 6 * day)])])


def _left(store: Store) -> dict[str, list]:
    with store.engine.connect() as conn:
        return {
            "events": conn.execute(select(events.c.flow_id, events.c.offset)
                                   .order_by(events.c.offset)).all(),
            "spans": conn.execute(select(spans.c.span_id).order_by(spans.c.span_id)).all(),
            "trace_fetches": conn.execute(select(trace_fetches.c.trace_id)).all(),
            "anomalies": conn.execute(select(anomalies.c.key).order_by(anomalies.c.key)).all(),
        }


def _check(store: Store) -> None:
    _fill(store)
    assert prune(store, 7, now_ms=NOW) == {
        "events": 3, "spans": 2, "trace_fetches": 1, "anomalies": 2}
    left = {name: [tuple(r) for r in rows] for name, rows in _left(store).items()}
    assert left == {
        "events": [("live", 2), ("live", 3), ("endless", 5)],  # whole flows; 15 days > 2 x 7
        "spans": [(f"{1:016x}",), (f"{3:016x}",)],  # of a live flow's trace; young
        "trace_fetches": [(f"{1:032x}",)],
        "anomalies": [("k1",), ("k3",)],  # of a live flow; young
    }
    assert prune(store, 7, now_ms=NOW) == {
        "events": 0, "spans": 0, "trace_fetches": 0, "anomalies": 0}
    assert prune(store, 0, now_ms=NOW + 100 * DAY_MS) == {}
    assert len(_left(store)["events"]) == 3


def test_prune_sqlite(tmp_path) -> None:
    """Flows idle longer than the retention go whole, with their spans and anomalies; live
    flows stay whole up to twice the retention; 0 days keeps everything."""
    store = Store(f"sqlite:///{tmp_path}/r.db").create()
    _check(store)
    store.dispose()


@pytest.mark.postgres
def test_prune_postgres(postgres_url: str) -> None:
    """Pruning on PostgreSQL deletes exactly the same rows as on SQLite."""
    store = Store(postgres_url).create()
    _check(store)
    store.dispose()


def test_negative_retention_is_rejected(tmp_path) -> None:
    """A negative retention is a configuration error, not a silent no-op."""
    store = Store(f"sqlite:///{tmp_path}/n.db").create()
    with pytest.raises(ValueError, match="expected retention days >= 0, got -1"):
        prune(store, -1)
    store.dispose()
