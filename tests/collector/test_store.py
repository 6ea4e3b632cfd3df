"""The store's schema: created, and upgraded in place, by the collector itself."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from choreoscope.collector.store import Store


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_create_drops_retired_indexes_and_is_idempotent(kind, tmp_path, request) -> None:
    """A store made by an earlier version keeps its rows and loses the index nothing reads;
    creating twice changes nothing."""
    url = (f"sqlite:///{tmp_path}/s.db" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store(url).create()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_events_causation ON events (causation_id)")
    assert "ix_events_causation" in _indexes(store)
    store.create().create()
    assert "ix_events_causation" not in _indexes(store)
    assert {"ix_events_flow", "ix_events_event_id", "ix_events_observed"} <= _indexes(store)
    assert store.get_meta("schema_version") == "1"
    store.dispose()


def _indexes(store: Store) -> set[str]:
    return {ix["name"] for ix in inspect(store.engine).get_indexes("events")}
