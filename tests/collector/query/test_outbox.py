"""The outbox query on SQLite and PostgreSQL."""

from __future__ import annotations

from choreoscope.collector.query import outbox_status
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import outbox_sources
from tests.collector.query import expected
from tests.collector.query._data import T0


def test_outbox_status_exact(store: Store) -> None:
    """Each source in the DESIGN shape, by name, unreachable ones marked, never healthy."""
    assert outbox_status(store, now_ms=T0 + 130_000) == expected.OUTBOX


def test_a_source_no_collector_polls_any_more_is_stale(store: Store) -> None:
    """Polled last more than three poll intervals (the default: 10 s) ago, a source is stale:
    its figures, however healthy, are old."""
    last_poll = T0 + 125_000
    assert [s["stale"] for s in outbox_status(store, now_ms=last_poll + 30_000)] == [
        False, False]
    assert [s["stale"] for s in outbox_status(store, now_ms=last_poll + 30_001)] == [True, True]
    assert outbox_status(store) == expected.OUTBOX_LATER  # the clock's now


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


def test_outbox_errors_never_show_passwords(store: Store) -> None:
    """A stored error quoting a database URL is shown with its password masked."""
    with store.engine.begin() as conn:
        conn.execute(outbox_sources.update().where(outbox_sources.c.source == "billing").values(
            last_error="cannot connect to postgresql://app:hunter2@db/billing",
            stuck='[{"id": "x", "last_error": "postgres://u:pw@h/db refused"}]'))
    billing = outbox_status(store)[0]
    assert billing["last_error"] == "cannot connect to postgresql://app:***@db/billing"
    assert billing["stuck"][0]["last_error"] == "postgres://u:***@h/db refused"
