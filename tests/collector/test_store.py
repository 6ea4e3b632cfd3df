"""The store's schema: created, and upgraded in place, by the collector itself."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from choreoscope.collector.store import Store, StoreError


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
    assert store.get_meta("schema_version") == "2"
    store.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_create_upgrades_the_indexes_of_an_earlier_store(kind, tmp_path, request, caplog) -> None:
    """A store whose tables an earlier version made gets the indexes added since (create_all
    alone skips existing tables) and loses the retired ones; its rows stay; a second create
    changes nothing and says nothing."""
    url = (f"sqlite:///{tmp_path}/s.db" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store(url).create()
    fresh = {table: _indexes(store, table) for table in ("events", "flows")}
    added_since = ("ix_events_problems", "ix_events_untraced", "ix_events_type_version",
                   "ix_events_trace_span")
    retired = ("ix_events_causation", "ix_events_trace", "ix_events_type")
    with store.engine.begin() as conn:
        for name in (*added_since, "ix_flows_variant_duration"):
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.exec_driver_sql("CREATE INDEX ix_events_trace ON events (trace_id)")
        conn.exec_driver_sql("CREATE INDEX ix_events_type ON events (type)")
        conn.exec_driver_sql("CREATE INDEX ix_events_causation ON events (causation_id)")
        conn.exec_driver_sql(
            "INSERT INTO events (topic, partition, \"offset\", flow_id, observed_at_ms, envelope,"
            " data_truncated, problems, type, source) VALUES ('t', 0, 7, 'f', 1, 'unknown',"
            " false, '[\"x\"]', 'a.b', 's')")
    caplog.set_level("INFO", logger="choreoscope.collector.store.engine")
    store.create()
    assert {table: _indexes(store, table) for table in ("events", "flows")} == fresh
    assert sorted(r.getMessage() for r in caplog.records) == sorted(
        [f"store: creating index {name} on events (upgrade of an earlier store)"
         for name in added_since]
        + ["store: creating index ix_flows_variant_duration on flows (upgrade of an earlier "
           "store)"]
        + [f"store: dropping index {name}, which this version no longer uses"
           for name in retired])
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar() == 1
    caplog.clear()
    Store(url).create().dispose()
    assert caplog.records == []
    store.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_create_adds_the_columns_of_later_versions(kind, tmp_path, request, caplog) -> None:
    """A store made before `events.trace_sampled` existed is read as it is (the flow detail
    does without the column), then gets the column from the collector, its rows kept with no
    flag; a second create changes nothing."""
    from choreoscope.collector.query import get_flow

    url = (f"sqlite:///{tmp_path}/s.db" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store(url).create()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE events DROP COLUMN trace_sampled")
        conn.exec_driver_sql(
            "INSERT INTO events (topic, partition, \"offset\", flow_id, observed_at_ms, envelope,"
            " data_truncated, type, event_id) VALUES ('t', 0, 7, 'f', 1, 'unknown', false,"
            " 'a.b', 'e1')")
    reader = Store(url, readonly=True)
    reader.check_columns(reading=True)
    flow = get_flow(reader, "f")
    assert flow is not None and [e["id"] for e in flow["events"]] == ["e1"]
    reader.dispose()
    with pytest.raises(StoreError, match="no column trace_sampled"):
        store.check_columns()
    caplog.set_level("INFO", logger="choreoscope.collector.store.engine")
    store.create()
    assert [r.getMessage() for r in caplog.records] == [
        "store: adding column trace_sampled to events (upgrade of an earlier store)"]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT event_id, trace_sampled FROM events").all() == [("e1", None)]
    caplog.clear()
    Store(url).create().dispose()
    assert caplog.records == []
    store.dispose()


def _indexes(store: Store, table: str = "events") -> set[str]:
    return {ix["name"] for ix in inspect(store.engine).get_indexes(table)}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_database_errors_never_carry_the_rows_values(kind, tmp_path, request) -> None:
    """A statement the database refuses raises (and is logged) without its parameters: a
    payload or an id in them never reaches a log line."""
    from sqlalchemy.exc import IntegrityError

    from choreoscope.collector.store.schema import meta

    url = (f"sqlite:///{tmp_path}/s.db" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store(url).create()
    with pytest.raises(IntegrityError) as raised, store.engine.begin() as conn:
        conn.execute(meta.insert(), [{"key": "k", "value": "secret-payload-1"},
                                     {"key": "k", "value": "secret-payload-2"}])
    assert "secret-payload" not in str(raised.value)
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(raised.value)
    store.dispose()


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///choreoscope.db", "choreoscope.db"),
    ("sqlite:////var/lib/choreoscope/store.db", "/var/lib/choreoscope/store.db"),
    ("sqlite:///store.db?timeout=3", "store.db"),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("sqlite:///file:/tmp/store.db?mode=ro&uri=true", None),
    ("postgresql://postgres:secret@127.0.0.1:5432/test", None),
    ("not a url", None),
])
def test_sqlite_file_names_the_file_of_a_sqlite_url_only(url, path) -> None:
    from choreoscope.collector.store.engine import sqlite_file

    assert sqlite_file(url) == path
