"""The outbox query on SQLite and PostgreSQL."""

from __future__ import annotations

from choreoscope.collector.query import outbox_status
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import outbox_sources
from tests.collector.query import expected


def test_outbox_status_exact(store: Store) -> None:
    """Each source in the DESIGN shape, by name, unreachable ones marked, never healthy."""
    assert outbox_status(store) == expected.OUTBOX


def test_outbox_bad_stuck_json(store: Store) -> None:
    """Unparseable or odd stuck JSON gives an empty or filtered list, not an error."""
    with store.engine.begin() as conn:
        conn.execute(outbox_sources.update().where(outbox_sources.c.source == "orders")
                     .values(stuck="{not json"))
        conn.execute(outbox_sources.update().where(outbox_sources.c.source == "billing")
                     .values(stuck='[1, {"id": "x"}]'))
    by_name = {s["source"]: s for s in outbox_status(store)}
    assert by_name["orders"]["stuck"] == []
    assert by_name["billing"]["stuck"] == [
        {"id": "x", "aggregatetype": None, "aggregateid": None, "type": None, "attempts": None,
         "last_error": None, "age_s": None, "correlation_id": None, "trace_id": None,
         "status": None}]
