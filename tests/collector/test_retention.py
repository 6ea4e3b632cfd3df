"""Retention pruning of events, spans, trace fetches and anomalies."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from choreoscope.collector.retention import DAY_MS, prune
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, spans, trace_fetches

NOW = 1_800_000_000_000


def _fill(store: Store) -> None:
    old, new = NOW - 8 * DAY_MS, NOW - 6 * DAY_MS
    with store.engine.begin() as conn:
        store.insert_ignore(conn, events, [
            {"topic": "t", "partition": 0, "offset": i, "flow_id": "f", "observed_at_ms": ts,
             "envelope": "binary", "data_truncated": False} for i, ts in enumerate((old, new))])
        store.insert_ignore(conn, spans, [
            {"trace_id": "a" * 32, "span_id": f"{i:016x}", "name": "process t", "kind": "consumer",
             "start_us": ts * 1000, "duration_us": 1, "status": "ok", "out_of_order": False,
             "origin": "otlp", "received_at_ms": NOW} for i, ts in enumerate((old, new))])
        store.insert_ignore(conn, trace_fetches, [
            {"trace_id": f"{i:032x}", "first_seen_ms": ts, "last_event_ms": ts,
             "next_fetch_ms": ts, "attempts": 0, "status": "found", "span_count": 0}
            for i, ts in enumerate((old, new))])
        store.insert_ignore(conn, anomalies, [
            {"key": f"k{i}", "kind": "orphan", "detail": "d", "detected_at_ms": ts}
            for i, ts in enumerate((old, new))])


def _counts(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return [len(conn.execute(select(t)).all())
                for t in (events, spans, trace_fetches, anomalies)]


def _check(store: Store) -> None:
    _fill(store)
    assert prune(store, 7, now_ms=NOW) == {
        "events": 1, "spans": 1, "trace_fetches": 1, "anomalies": 1}
    assert _counts(store) == [1, 1, 1, 1]
    assert prune(store, 7, now_ms=NOW) == {
        "events": 0, "spans": 0, "trace_fetches": 0, "anomalies": 0}
    assert prune(store, 0, now_ms=NOW + 100 * DAY_MS) == {}
    assert _counts(store) == [1, 1, 1, 1]


def test_prune_sqlite(tmp_path) -> None:
    """Rows older than the retention go, younger ones stay, and 0 days keeps everything."""
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
