"""Reading the store for a pass (reconstruct/load.py) when the database goes away under it."""

from __future__ import annotations

import psycopg
import pytest

from choreoscope.collector.reconstruct.load import stream
from choreoscope.collector.store import Store


@pytest.mark.postgres
def test_a_stream_whose_connection_was_terminated_closes_quietly(postgres_url: str) -> None:
    """A pass interrupted by a terminated backend: closing its server-side cursor cannot
    work, and must not raise from the generator's cleanup ("Exception ignored in ...")."""
    store = Store(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            conn = store.engine.connect()
            raw = conn.connection.driver_connection
            rows = stream(raw, "postgresql", "SELECT generate_series(1, 100000)", "cs_test",
                          size=10)
            assert next(rows) == (1,)
            admin.execute("SELECT pg_terminate_backend(%s)", [raw.info.backend_pid])
            rows.close()  # as when the pass ends on another query's error
            conn.invalidate()
            conn.close()
    finally:
        store.dispose()


def test_a_stream_closed_early_closes_its_cursor(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db").create()
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        rows = stream(raw, "sqlite", "SELECT 1 UNION ALL SELECT 2", "cs_test")
        assert next(rows) == (1,)
        rows.close()
        assert list(rows) == []
    store.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_span_finds_the_event_it_published_through_one_index_lookup(
        kind, tmp_path, request) -> None:
    """A span naming no event joins the flow of the event its trace and span ids published:
    looked up by both ids in one index, not by scanning every event of its trace (a trace of
    20,000 events and as many such spans took 190 s on SQLite, 0.1 s with the index)."""
    from choreoscope.collector.reconstruct.load import SPANS_SQL

    url = (f"sqlite:///{tmp_path}/s.db" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store(url).create()
    try:
        with store.engine.connect() as conn:
            if kind == "sqlite":
                plan = "\n".join(row[-1] for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + SPANS_SQL["sqlite"]))
                assert "USING INDEX ix_events_trace_span (trace_id=? AND span_id=?)" in plan
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")  # empty tables: any plan
                plan = "\n".join(row[0] for row in conn.exec_driver_sql(
                    "EXPLAIN " + SPANS_SQL["postgresql"]))
                assert "Index Scan using ix_events_trace_span on events" in plan
                assert ("Index Cond: (((trace_id)::text = (s.trace_id)::text) AND "
                        "((span_id)::text = (s.span_id)::text))") in plan
    finally:
        store.dispose()
