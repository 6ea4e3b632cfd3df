"""The outbox monitor on real SQLite and PostgreSQL outbox tables (made by `Outbox.create_table`)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from choreoscope.collector.analyze import analyze
from choreoscope.collector.outbox_monitor import (
    InvalidOutboxSource,
    OutboxMonitor,
    OutboxSource,
    parse_outbox_source,
    to_epoch_ms,
)
from choreoscope.collector.query import (
    count_variants,
    get_flow,
    list_anomalies,
    list_flows,
    outbox_status,
)
from choreoscope.collector.store import Store
from choreoscope.collector.store.engine import normalize_url
from choreoscope.instrumentation.outbox import Outbox

NOW = 1_764_000_000_000  # 2025-11-24T16:00:00.000Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def uid(n: int) -> str:
    return f"00000000-0000-7000-8000-{n:012d}"


def iso(ms: int) -> str:
    from choreoscope.instrumentation._dbapi import format_time

    return format_time(ms)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    yield s
    s.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A service database with an empty outbox table, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'service.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    Outbox(url, service="orders").create_table()
    return url


def insert(url: str, rows: list[dict[str, Any]], table: str = "outbox") -> None:
    """Write outbox rows as the writer and relay leave them, with predictable ids and times."""
    engine = create_engine(normalize_url(url))
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        for r in rows:
            values = {"aggregatetype": "orders", "type": "order.placed", "attempts": 0,
                      "status": "pending", "last_error": None, "sent_at": None,
                      "tracingspancontext": None, "headers": {}} | r
            values["headers"] = json.dumps(values["headers"])
            for k in ("created_at", "sent_at"):
                if values[k] is not None:
                    values[k] = iso(values[k])
            cast = "cast(:headers as jsonb)" if pg else ":headers"
            conn.execute(text(
                f"insert into {table} (seq, id, aggregatetype, aggregateid, type, payload, "
                "headers, tracingspancontext, created_at, status, attempts, last_error, sent_at)"
                " values (:seq, :id, :aggregatetype, :aggregateid, :type, null, "
                f"{cast}, :tracingspancontext, :created_at, :status, :attempts, :last_error, "
                ":sent_at)"), values)
    engine.dispose()


ROWS = [
    # stuck: pending for 100 s, with its flow and trace
    {"seq": 1, "id": uid(1), "aggregateid": "ord_1", "created_at": NOW - 100_000,
     "headers": {"ce_correlationid": "flow-1", "ce_source": "orders"},
     "tracingspancontext": f"traceparent={TRACEPARENT}\ntracestate=k=v"},
    # not stuck: pending for 5 s
    {"seq": 2, "id": uid(2), "aggregateid": "ord_2", "created_at": NOW - 5_000},
    # stuck: retried max_attempts times, still pending
    {"seq": 3, "id": uid(3), "aggregateid": "ord_3", "created_at": NOW - 5_000, "attempts": 5,
     "last_error": "KafkaTimeoutError", "headers": {"ce_correlationid": "flow-3"}},
    # stuck: dead
    {"seq": 4, "id": uid(4), "aggregateid": "ord_4", "created_at": NOW - 200_000,
     "attempts": 5, "status": "dead", "last_error": "too large",
     "headers": {"ce_correlationid": "flow-4", "traceparent": TRACEPARENT}},
] + [
    # sent with 10, 20, ..., 200 ms of publish lag
    {"seq": 10 + i, "id": uid(10 + i), "aggregateid": f"ord_s{i}",
     "created_at": NOW - 60_000 + i, "status": "sent", "attempts": 1,
     "sent_at": NOW - 60_000 + i + 10 * (i + 1)}
    for i in range(20)
]

STUCK = [
    {"id": uid(1), "seq": 1, "aggregatetype": "orders", "aggregateid": "ord_1",
     "type": "order.placed", "attempts": 0, "last_error": None, "age_s": 100.0,
     "created_at": "2025-11-24T15:58:20.000Z",
     "correlation_id": "flow-1", "trace_id": TRACE, "service": "orders", "status": "pending",
     "reason": "age"},
    {"id": uid(3), "seq": 3, "aggregatetype": "orders", "aggregateid": "ord_3",
     "type": "order.placed", "attempts": 5, "last_error": "KafkaTimeoutError", "age_s": 5.0,
     "created_at": "2025-11-24T15:59:55.000Z",
     "correlation_id": "flow-3", "trace_id": None, "service": None, "status": "pending",
     "reason": "attempts"},
    {"id": uid(4), "seq": 4, "aggregatetype": "orders", "aggregateid": "ord_4",
     "type": "order.placed", "attempts": 5, "last_error": "too large", "age_s": 200.0,
     "created_at": "2025-11-24T15:56:40.000Z",
     "correlation_id": "flow-4", "trace_id": TRACE, "service": None, "status": "dead",
     "reason": "dead"},
]


def test_parse_outbox_source() -> None:
    """NAME=DB_URL with an optional #table, schema-qualified or not."""
    assert parse_outbox_source("orders=sqlite:///orders.db") == OutboxSource(
        "orders", "sqlite:///orders.db", "outbox")
    assert parse_outbox_source("billing=postgresql://app:pw@db:5432/billing#billing.outbox") == \
        OutboxSource("billing", "postgresql://app:pw@db:5432/billing", "billing.outbox")
    assert parse_outbox_source("b=postgres://db/x#events_out").table == "events_out"
    assert "pw" not in repr(parse_outbox_source("b=postgresql://app:pw@db/x"))


@pytest.mark.parametrize("spec", [
    "", "orders", "=sqlite:///x.db", "or ders=sqlite:///x.db", "orders=", "orders=mysql://h/db",
    "orders=sqlite:///x.db#bad-name", "orders=sqlite:///x.db#1st", "orders=sqlite:///x.db#",
    "orders=postgresql://app:hunter2@db/x#outbox; drop table users",
    "orders=sqlite:///x.db#a.b.c",
])
def test_bad_specs_rejected_loudly(spec: str) -> None:
    """A bad spec raises with the expected format, the spec, and never the password."""
    with pytest.raises(InvalidOutboxSource) as exc:
        parse_outbox_source(spec)
    assert str(exc.value).startswith("expected NAME=DB_URL[#table]")
    assert "hunter2" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_monitor_rejects_bad_settings(store: Store) -> None:
    """Duplicate names and nonsense thresholds are refused at start-up."""
    with pytest.raises(InvalidOutboxSource, match="distinct"):
        OutboxMonitor(store, ["a=sqlite:///x.db", "a=sqlite:///y.db"])
    with pytest.raises(ValueError, match="expected stuck_after_s > 0"):
        OutboxMonitor(store, ["a=sqlite:///x.db"], stuck_after_s=0)


def test_poll_figures_and_stuck_rows(store: Store, outbox_url: str) -> None:
    """One poll stores pending, dead, oldest age, lag p95 and the stuck rows with flow and trace."""
    insert(outbox_url, ROWS)
    monitor = OutboxMonitor(store, [OutboxSource("orders", outbox_url)])
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    assert outbox_status(store, now_ms=NOW + 1000) == [{
        "source": "orders", "table": "outbox", "pending": 3, "dead": 1,
        "oldest_pending_age_s": 100.0, "publish_lag_p95_ms": 190.0, "stuck": STUCK,
        "reachable": True, "last_ok_at": "2025-11-24T16:00:00.000Z",
        "last_poll_at": "2025-11-24T16:00:00.000Z", "last_error": None, "stale": False,
    }]


def test_stuck_rows_become_anomalies_once(store: Store, outbox_url: str) -> None:
    """Each stuck row is one stuck_outbox anomaly of its flow; polling again adds only new ones."""
    insert(outbox_url, ROWS)
    monitor = OutboxMonitor(store, [OutboxSource("orders", outbox_url)])
    monitor.poll_once(now_ms=NOW)
    monitor.poll_once(now_ms=NOW + 1_000)
    found = list_anomalies(store, kind="stuck_outbox")
    assert [(a["subkind"], a["correlation_id"], a["event_id"], a["subject"], a["service"])
            for a in found] == [("age", "flow-1", uid(1), "ord_1", "orders"),
                                ("attempts", "flow-3", uid(3), "ord_3", "orders"),
                                ("dead", "flow-4", uid(4), "ord_4", "orders")]
    assert found[2]["detail"] == (f"outbox orders: row {uid(4)} (order.placed for orders/ord_4) "
                                  "is dead after 5 attempts; last error: too large")
    assert found[0]["detected_at"] == "2025-11-24T16:00:00.000Z"
    assert found[0]["extra"] == {"source": "orders", "table": "outbox", "seq": 1, "attempts": 0,
                                 "age_s": 100.0, "trace_id": TRACE, "status": "pending",
                                 "type": "order.placed",
                                 "created_at": "2025-11-24T15:58:20.000Z"}
    monitor.poll_once(now_ms=NOW + 60_000)  # row 2 is now 65 s old: one new anomaly
    monitor.close()
    assert [a["event_id"] for a in list_anomalies(store, kind="stuck_outbox")] == [
        uid(1), uid(3), uid(4), uid(2)]


def test_empty_outbox(store: Store, outbox_url: str) -> None:
    """An empty outbox is reachable with zero backlog and no lag figure."""
    OutboxMonitor(store, [f"orders={outbox_url}"]).poll_once(now_ms=NOW)
    (status,) = outbox_status(store)
    assert (status["reachable"], status["pending"], status["dead"],
            status["oldest_pending_age_s"], status["publish_lag_p95_ms"], status["stuck"]) == (
        True, 0, 0, None, None, [])


def test_rows_from_the_real_writer(store: Store, tmp_path: Path, tracer_provider: Any) -> None:
    """A row written by Outbox.add inside a span links to that span's trace and its own flow."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="orders")
    outbox.create_table()
    conn = sqlite3.connect(tmp_path / "svc.db")
    with tracer_provider.get_tracer("t").start_as_current_span("place") as span:
        event = outbox.add(conn, aggregatetype="orders", aggregateid="ord_9",
                           event_type="order.placed", data={"total": 3})
    conn.commit()
    conn.close()
    created = to_epoch_ms(event.time)
    assert created is not None
    OutboxMonitor(store, [f"orders={url}"], stuck_after_s=1).poll_once(now_ms=created + 2_000)
    (status,) = outbox_status(store)
    (row,) = status["stuck"]
    assert (row["id"], row["correlation_id"], row["trace_id"], row["age_s"], row["reason"]) == (
        event.id, event.id, f"{span.get_span_context().trace_id:032x}", 2.0, "age")


def test_missing_sqlite_database_then_recovery(store: Store, tmp_path: Path) -> None:
    """A database that is not there is unreachable (and not created); once it exists, polls recover;
    when it fails again, the last good figures and time stay, marked unreachable."""
    path = tmp_path / "later.db"
    url = f"sqlite:///{path}"
    monitor = OutboxMonitor(store, [f"orders={url}"])
    monitor.poll_once(now_ms=NOW)
    assert not path.exists()
    (status,) = outbox_status(store)
    assert (status["reachable"], status["last_ok_at"], status["pending"]) == (False, None, None)
    assert "unable to open database file" in status["last_error"]
    assert status["last_error"].endswith(f" (file {path})")  # the file it looked for

    Outbox(url, service="orders").create_table()
    insert(url, ROWS[:2])
    monitor.poll_once(now_ms=NOW + 1000)
    (status,) = outbox_status(store)
    assert (status["reachable"], status["last_ok_at"], status["pending"], status["last_error"]) \
        == (True, "2025-11-24T16:00:01.000Z", 2, None)

    os.rename(path, tmp_path / "moved.db")
    monitor.poll_once(now_ms=NOW + 2000)
    (status,) = outbox_status(store)
    assert (status["reachable"], status["last_ok_at"], status["last_poll_at"],
            status["pending"]) == (False, "2025-11-24T16:00:01.000Z",
                                   "2025-11-24T16:00:02.000Z", 2)
    assert [s["id"] for s in status["stuck"]] == [uid(1)]  # last known, still shown
    monitor.close()


def test_missing_table_is_not_healthy(store: Store, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A reachable database without the outbox table is reported as failing, with why; the
    log says so once, not on every poll, and says when the table can be read again."""
    caplog.set_level("INFO")
    path = tmp_path / "bare.db"
    sqlite3.connect(path).close()
    monitor = OutboxMonitor(store, [f"orders=sqlite:///{path}#my_outbox"])
    for i in range(3):
        monitor.poll_once(now_ms=NOW + i)
    (status,) = outbox_status(store)
    assert (status["reachable"], status["table"]) == (False, "my_outbox")
    assert "no such table: my_outbox" in status["last_error"]
    Outbox(f"sqlite:///{path}", service="orders", table="my_outbox").create_table()
    monitor.poll_once(now_ms=NOW + 10)
    monitor.close()
    said = [r.getMessage() for r in caplog.records if r.name.endswith("outbox_monitor")]
    assert [m.split(":")[0] for m in said] == ["outbox orders cannot be read", "outbox orders read again"]


@pytest.mark.postgres
def test_postgres_unreachable_hides_password_then_recovers(store: Store,
                                                           postgres_url: str) -> None:
    """A PostgreSQL source that refuses connections is unreachable without its password leaking;
    one whose table appears later recovers by itself; one bad source does not stop the others."""
    down = "postgresql://app:hunter2@127.0.0.1:1/shop"
    monitor = OutboxMonitor(store, [f"down={down}", f"orders={postgres_url}"], timeout_s=2)
    monitor.poll_once(now_ms=NOW)
    by_name = {s["source"]: s for s in outbox_status(store)}
    assert by_name["down"]["reachable"] is False
    assert "hunter2" not in by_name["down"]["last_error"]
    assert "refused" in by_name["down"]["last_error"].lower()
    assert by_name["orders"]["reachable"] is False
    assert 'relation "outbox" does not exist' in by_name["orders"]["last_error"]

    Outbox(postgres_url, service="orders").create_table()
    insert(postgres_url, ROWS[3:4])
    monitor.poll_once(now_ms=NOW + 1000)
    by_name = {s["source"]: s for s in outbox_status(store)}
    assert (by_name["orders"]["reachable"], by_name["orders"]["dead"]) == (True, 1)
    assert by_name["down"]["reachable"] is False
    monitor.close()


@pytest.mark.parametrize(("value", "ms"), [
    ("2025-11-24T16:00:00.123Z", NOW + 123),
    ("2025-11-24 16:00:00.123456", NOW + 123),
    (NOW / 1000 + 0.5, NOW + 500),
    (NOW, NOW),
    (str(NOW), NOW),
    (b"2025-11-24T16:00:00Z", NOW),
    ("yesterday", None),
    ("nan", None),
    (float("inf"), None),
    (b"\xff\xfe", None),
    (["2025-11-24T16:00:00Z"], None),
    (None, None),
    (True, None),
])
def test_to_epoch_ms(value: Any, ms: int | None) -> None:
    """Stored times of every flavour become epoch ms; unknown ones None."""
    assert to_epoch_ms(value) == ms


@pytest.mark.postgres
def test_store_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """The monitor writes its rows and anomalies to a PostgreSQL store the same way."""
    url = f"sqlite:///{tmp_path / 'service.db'}"
    Outbox(url, service="orders").create_table()
    insert(url, ROWS)
    pg_store = Store(postgres_url).create()
    monitor = OutboxMonitor(pg_store, [f"orders={url}"])
    monitor.poll_once(now_ms=NOW)
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    (status,) = outbox_status(pg_store)
    assert (status["pending"], status["dead"], status["publish_lag_p95_ms"], status["stuck"]) == (
        3, 1, 190.0, STUCK)
    assert len(list_anomalies(pg_store, kind="stuck_outbox")) == 3
    pg_store.dispose()


def test_a_stuck_row_that_dies_is_reported_dead(store: Store, outbox_url: str) -> None:
    """The anomaly of a row first seen pending too long says `dead` once the row is dead."""
    insert(outbox_url, ROWS[:1])
    monitor = OutboxMonitor(store, [OutboxSource("orders", outbox_url)])
    monitor.poll_once(now_ms=NOW)
    engine = create_engine(normalize_url(outbox_url))
    with engine.begin() as conn:
        conn.execute(text("update outbox set status = 'dead', attempts = 5, "
                          "last_error = 'too large' where seq = 1"))
    engine.dispose()
    monitor.poll_once(now_ms=NOW + 5_000)
    monitor.poll_once(now_ms=NOW + 10_000)
    monitor.close()
    (found,) = list_anomalies(store, kind="stuck_outbox")
    assert (found["subkind"], found["detected_at"]) == ("dead", "2025-11-24T16:00:00.000Z")
    assert found["detail"] == (f"outbox orders: row {uid(1)} (order.placed for orders/ord_1) "
                               "is dead after 5 attempts; last error: too large")
    assert found["extra"]["age_s"] is None


def test_the_newest_dead_rows_and_every_stuck_pending_row_are_listed(
        store: Store, outbox_url: str) -> None:
    """Past `stuck_limit`, the stuck pending rows and the newest dead rows are listed, not the
    oldest dead rows for ever; every row is still counted."""
    old_dead = [{"seq": i, "id": uid(i), "aggregateid": f"ord_{i}", "created_at": NOW - 900_000,
                 "status": "dead", "attempts": 5} for i in range(1, 6)]
    insert(outbox_url, [
        *old_dead,
        {"seq": 6, "id": uid(6), "aggregateid": "ord_6", "created_at": NOW - 100_000},
        {"seq": 7, "id": uid(7), "aggregateid": "ord_7", "created_at": NOW - 1_000,
         "status": "dead", "attempts": 5, "headers": {"ce_correlationid": "flow-7"}}])
    monitor = OutboxMonitor(store, [OutboxSource("orders", outbox_url)], stuck_limit=3)
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    (status,) = outbox_status(store)
    assert (status["pending"], status["dead"]) == (1, 6)
    assert [(r["seq"], r["reason"]) for r in status["stuck"]] == [
        (5, "dead"), (6, "age"), (7, "dead")]


@pytest.mark.postgres
def test_a_row_with_overlong_ids_is_recorded_and_the_next_source_still_polled(
        tmp_path: Path, postgres_url: str) -> None:
    """An outbox row's ids are the service's: a correlation id over the store's 128 characters
    or an aggregate id over 255 is cut to fit in its anomaly, on PostgreSQL, which refuses
    longer values; the sources after it are polled and stored as before. The correlation id
    keeps a hash of the whole, as ingest cuts it: the dead row makes one failed flow of that
    id, and the analysis pass writes it."""
    from choreoscope.collector.analyze import analyze
    from choreoscope.collector.query import list_flows
    from choreoscope.collector.store.text import cut_id

    long_url, url = (f"sqlite:///{tmp_path / name}" for name in ("long.db", "service.db"))
    for u in (long_url, url):
        Outbox(u, service="orders").create_table()
    insert(long_url, [{"seq": 1, "id": uid(1), "aggregateid": "a" * 300, "created_at": NOW - 1,
                       "status": "dead", "attempts": 5, "headers": {"ce_correlationid": "c" * 200}}])
    insert(url, ROWS)
    pg_store = Store(postgres_url).create()
    monitor = OutboxMonitor(pg_store, [f"long={long_url}", f"orders={url}"])
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    by_source = {s["source"]: s for s in outbox_status(pg_store)}
    assert (by_source["long"]["dead"], by_source["orders"]["dead"]) == (1, 1)
    assert by_source["long"]["stuck"][0]["correlation_id"] == "c" * 200  # the row as it is
    found = {a["correlation_id"]: a for a in list_anomalies(pg_store, kind="stuck_outbox")}
    cut = cut_id("c" * 200, 128)
    assert sorted(found) == sorted([cut, "flow-1", "flow-3", "flow-4"])
    assert found[cut]["subject"] == "a" * 255
    analyze(pg_store, now_ms=NOW)
    assert [(f["correlation_id"], f["status"], f["event_count"]) for f in list_flows(pg_store)
            if f["correlation_id"].startswith("c")] == [(cut, "failed", 0)]
    pg_store.dispose()


def test_anomalies_the_store_refuses_leave_the_numbers_and_other_sources(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Should the store refuse a source's anomalies, its numbers are stored without them
    (with a warning) and the next source is polled."""
    from choreoscope.collector import outbox_monitor

    first, second = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    for u in (first, second):
        Outbox(u, service="orders").create_table()
        insert(u, ROWS)
    real = outbox_monitor.record

    def refuse_the_first(store: Store, conn: Any, found: list[Any], now_ms: int) -> int:
        if found and found[0].extra["source"] == "first":
            raise ValueError("refused")
        return real(store, conn, found, now_ms)

    monkeypatch.setattr(outbox_monitor, "record", refuse_the_first)
    monitor = OutboxMonitor(store, [f"first={first}", f"second={second}"])
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    assert [(s["source"], s["pending"], s["dead"]) for s in outbox_status(store)] == [
        ("first", 3, 1), ("second", 3, 1)]
    assert {a["extra"]["source"] for a in list_anomalies(store, kind="stuck_outbox")} == {
        "second"}
    assert "outbox first: its stuck rows could not be recorded as anomalies (ValueError: " \
           "refused)" in caplog.text


def test_a_relative_sqlite_path_is_named_whole_when_it_cannot_be_read(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--outbox shop=sqlite:///shop.db` is read from the collector's working directory: the
    error names the file it tried."""
    monkeypatch.chdir(tmp_path)
    monitor = OutboxMonitor(store, ["shop=sqlite:///missing/shop.db"])
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    (status,) = outbox_status(store)
    assert status["last_error"].endswith(f" (file {tmp_path / 'missing' / 'shop.db'})")


def test_a_dead_row_whose_event_never_reached_the_bus_makes_a_failed_flow(
        store: Store, outbox_url: str) -> None:
    """DESIGN: a flow is failed when a dead outbox row belongs to it. A dead row is a flow even
    when none of its events reached the bus: failed, no event, the row's type, service, trace
    and creation time, its anomaly; listed among failed flows, not among variants."""
    insert(outbox_url, ROWS)
    monitor = OutboxMonitor(store, [OutboxSource("orders", outbox_url)])
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    analyze(store, now_ms=NOW + 1_000)
    assert list_flows(store, status="failed") == [{
        "correlation_id": "flow-4", "status": "failed",
        "started_at": "2025-11-24T15:56:40.000Z", "last_seen_at": "2025-11-24T15:56:40.000Z",
        "duration_ms": 0, "event_count": 0, "services": ["orders"],
        "event_types": ["order.placed"], "trace_ids": [TRACE], "anomaly_count": 1,
        "variant": "", "trace_status": "unavailable"}]
    flow = get_flow(store, "flow-4")
    assert flow is not None
    assert (flow["events"], flow["spans"]) == ([], [])
    assert [(a["kind"], a["subkind"], a["event_id"]) for a in flow["anomalies"]] == [
        ("stuck_outbox", "dead", uid(4))]
    assert count_variants(store) == []
    assert analyze(store, now_ms=NOW + 2_000).flows_written == 0  # written once


def test_a_dead_row_found_only_in_its_anomaly_still_makes_its_flow(
        store: Store, outbox_url: str) -> None:
    """Once the monitor lists newer dead rows, or polls no longer, the row's anomaly alone
    keeps its flow, with the row's creation time."""
    insert(outbox_url, ROWS)
    monitor = OutboxMonitor(store, [OutboxSource("orders", outbox_url)])
    monitor.poll_once(now_ms=NOW)
    monitor.close()
    with store.engine.begin() as conn:
        conn.execute(text("delete from outbox_sources"))
    analyze(store, now_ms=NOW + 1_000)
    ((cid, status, started, count, types),) = [
        (f["correlation_id"], f["status"], f["started_at"], f["event_count"], f["event_types"])
        for f in list_flows(store)]
    assert (cid, status, started, count, types) == (
        "flow-4", "failed", "2025-11-24T15:56:40.000Z", 0, ["order.placed"])
