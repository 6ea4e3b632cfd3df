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
