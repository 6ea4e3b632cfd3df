"""The transactional outbox writer on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState, use_span

from choreoscope.instrumentation import _dbapi
from choreoscope.instrumentation.context import handling
from choreoscope.instrumentation.event import Event
from choreoscope.instrumentation.outbox import Outbox
from choreoscope.instrumentation.traceparent import format_traceparent

COLUMNS = [
    "seq", "id", "aggregatetype", "aggregateid", "type", "payload", "headers",
    "tracingspancontext", "topic", "created_at", "status", "attempts", "next_attempt_at",
    "last_attempt_at", "last_error", "sent_at",
]
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty service database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    return str(request.getfixturevalue("postgres_url"))


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def dbapi_connect(url: str) -> Any:
    """A plain DB-API connection (sqlite3 or psycopg 3) to the database at `url`."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url[len("sqlite:///"):])
    return psycopg.connect(url)


def outbox_rows(outbox: Outbox) -> list[dict[str, Any]]:
    """Every row of the outbox table, JSON decoded, ids as text and times in epoch ms."""
    conn, _ = outbox._open()
    columns = [_dbapi.as_text(c) if c in ("payload", "headers") else c for c in COLUMNS]
    try:
        cur = _dbapi.tuple_cursor(conn)
        cur.execute(f"select {', '.join(columns)} from {outbox.table} order by seq")
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()
    for row in rows:
        row["id"] = str(row["id"])
        row["payload"] = _dbapi.json_from_text(row["payload"])
        row["headers"] = _dbapi.json_from_text(row["headers"])
        for name in ("created_at", "next_attempt_at", "last_attempt_at", "sent_at"):
            row[name] = _dbapi.time_ms(row[name])
    return rows


def add_order(outbox: Outbox, conn: Any, order_id: str, **kw: Any) -> Event:
    """Write one `order.placed` event for `order_id` through `outbox` on `conn`."""
    args: dict[str, Any] = {
        "aggregatetype": "orders", "aggregateid": order_id, "event_type": "order.placed",
        "data": {"order_id": order_id, "amount": 12.5},
    }
    args.update(kw)
    return outbox.add(conn, **args)


def commit_rows(outbox: Outbox, url: str, *order_ids: str, **kw: Any) -> list[Event]:
    """Write and commit one event per order id, each in its own transaction."""
    events = []
    for order_id in order_ids:
        conn = dbapi_connect(url)
        try:
            events.append(add_order(outbox, conn, order_id, **kw))
            conn.commit()
        finally:
            conn.close()
    return events


def _create_orders(url: str) -> None:
    conn = dbapi_connect(url)
    conn.cursor().execute("create table orders (id varchar(32) primary key)")
    conn.commit()
    conn.close()


@contextmanager
def business_transaction(kind: str, url: str) -> Iterator[tuple[Any, Callable[[str], None]]]:
    """A caller's transaction of the given kind: (conn for add(), insert-an-order function).

    On leaving the block the caller commits or rolls back through `conn` as it normally would.
    """
    if kind == "dbapi":
        conn = dbapi_connect(url)
        mark = "?" if isinstance(conn, sqlite3.Connection) else "%s"
        try:
            yield conn, lambda oid: conn.cursor().execute(
                f"insert into orders (id) values ({mark})", (oid,))
        finally:
            conn.close()
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    engine = create_engine(sqlalchemy_url(url))
    insert = text("insert into orders (id) values (:id)")
    try:
        if kind == "sa_connection":
            with engine.connect() as sa_conn:
                yield sa_conn, lambda oid: sa_conn.execute(insert, {"id": oid})
        else:
            with Session(engine) as session:
                yield session, lambda oid: session.execute(insert, {"id": oid})
    finally:
        engine.dispose()


def _count(url: str, table: str) -> int:
    conn = dbapi_connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"select count(*) from {table}")
        return int(cur.fetchone()[0])
    finally:
        conn.close()


# -- create_table -------------------------------------------------------------------------


def test_create_table_makes_the_debezium_table(db_url: str) -> None:
    """create_table makes every column of DESIGN.md section 5 and the relay's indexes, idempotently."""
    outbox = Outbox(db_url, service="order-service")
    outbox.create_table()
    outbox.create_table()
    conn = dbapi_connect(db_url)
    cur = conn.cursor()
    if db_url.startswith("sqlite"):
        cur.execute("select name from pragma_table_info('outbox') order by cid")
        columns = [r[0] for r in cur.fetchall()]
        cur.execute("select name from sqlite_master where type = 'index' and tbl_name = 'outbox'"
                    " and sql is not null order by name")
    else:
        cur.execute("select column_name from information_schema.columns"
                    " where table_name = 'outbox' order by ordinal_position")
        columns = [r[0] for r in cur.fetchall()]
        cur.execute("select indexname from pg_indexes where tablename = 'outbox'"
                    " and indexname like 'outbox_%%_idx' order by indexname")
    indexes = [r[0] for r in cur.fetchall()]
    conn.close()
    assert columns == COLUMNS
    assert indexes == ["outbox_aggregate_seq_idx", "outbox_pending_idx", "outbox_status_next_idx"]


@pytest.mark.postgres
def test_create_table_postgres_types(postgres_url: str) -> None:
    """On PostgreSQL the id is a uuid, payload and headers jsonb and times timestamptz."""
    Outbox(postgres_url, service="s").create_table()
    with psycopg.connect(postgres_url) as conn:
        types = dict(conn.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_name = 'outbox'").fetchall())
    assert {k: types[k] for k in ("seq", "id", "payload", "headers", "created_at", "sent_at")} == {
        "seq": "bigint", "id": "uuid", "payload": "jsonb", "headers": "jsonb",
        "created_at": "timestamp with time zone", "sent_at": "timestamp with time zone",
    }


@pytest.mark.postgres
def test_replicas_creating_the_table_at_once_all_succeed(postgres_url: str) -> None:
    """Four processes' worth of create_table at the same moment, on fresh tables: none fails
    (PostgreSQL's CREATE ... IF NOT EXISTS alone races on its catalog)."""
    import threading

    for trial in range(6):
        outbox = Outbox(postgres_url, table=f"race_{trial}", service="s")
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def create(box: Outbox = outbox, go: threading.Barrier = start,
                   failed: list[BaseException] = errors) -> None:
            go.wait()
            try:
                box.create_table()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                failed.append(exc)

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        commit_rows(outbox, postgres_url, "ord_1")
        assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_1"]


@pytest.mark.postgres
def test_schema_qualified_table(postgres_url: str) -> None:
    """A `schema.table` name is accepted and used as is."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("create schema shop")
    outbox = Outbox(postgres_url, table="shop.events_outbox", service="s")
    outbox.create_table()
    commit_rows(outbox, postgres_url, "ord_1")
    assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_1"]


def test_schema_qualified_table_on_sqlite(tmp_path: Path) -> None:
    """On SQLite too: `main.outbox` gets its table and indexes (SQLite puts the schema on the
    index name, never on its table), and rows go in and out of it."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, table="main.events_outbox", service="s")
    outbox.create_table()
    outbox.create_table()  # idempotent
    commit_rows(outbox, url, "ord_1")
    assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_1"]
    with closing(sqlite3.connect(tmp_path / "svc.db")) as conn:
        indexes = {r[0] for r in conn.execute(
            "select name from sqlite_master where type = 'index' and tbl_name = 'events_outbox'"
            " and sql is not null")}
    assert indexes == {"events_outbox_status_next_idx", "events_outbox_aggregate_seq_idx",
                       "events_outbox_pending_idx"}


def test_a_sqlite_url_with_query_parameters_names_the_same_file(tmp_path: Path) -> None:
    """`?timeout=...` (and SQLAlchemy's other parameters) are read as SQLAlchemy reads them,
    never as part of the file name: the service's engine with the same URL sees the outbox;
    `uri=true` opens a `file:` URI with SQLite's own parameters."""
    from sqlalchemy import create_engine

    path = tmp_path / "svc.db"
    url = f"sqlite:///{path}?timeout=5&check_same_thread=false"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    engine = create_engine(url)
    with engine.begin() as conn:
        add_order(outbox, conn, "ord_1")
    engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["svc.db"]
    assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_1"]
    readonly = Outbox(f"sqlite:///file:{path}?mode=ro&uri=true", service="s")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        readonly.create_table()
        with closing(readonly._open()[0]) as conn:
            conn.execute("insert into outbox (id, aggregatetype, aggregateid, type)"
                         " values ('x', 'a', 'b', 'c')")
    with pytest.raises(ValueError, match=r"expected the timeout of .* in seconds"):
        Outbox(f"sqlite:///{path}?timeout=soon", service="s")


@pytest.mark.postgres
def test_asyncio_connections_are_refused_with_the_way_to_use_them(postgres_url: str) -> None:
    """An asyncio connection (SQLAlchemy's AsyncConnection or AsyncSession, psycopg's
    AsyncConnection) gets a TypeError saying how to add through run_sync, and nothing is
    written; through run_sync the row goes in with the caller's transaction."""
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    outbox = Outbox(postgres_url, service="s")
    outbox.create_table()
    refused: list[str] = []

    def add(conn: Any) -> None:
        try:
            add_order(outbox, conn, "ord_x")
        except TypeError as exc:
            refused.append(str(exc))

    async def main() -> None:
        engine = create_async_engine(sqlalchemy_url(postgres_url).replace(
            "postgresql+psycopg://", "postgresql+psycopg_async://"))
        async with engine.begin() as conn:
            add(conn)
            await conn.run_sync(lambda sync_conn: add_order(outbox, sync_conn, "ord_1"))
        async with AsyncSession(engine) as session, session.begin():
            add(session)
        native = await psycopg.AsyncConnection.connect(postgres_url)
        add(native)
        await native.close()
        await engine.dispose()

    asyncio.run(main())
    assert len(refused) == 3
    assert all(r.startswith("expected a synchronous connection, got the asyncio one ")
               and "run_sync" in r for r in refused)
    assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_1"]


def test_create_table_with_sqlalchemy_engine(db_url: str) -> None:
    """A SQLAlchemy Engine works as the outbox's database."""
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(db_url))
    outbox = Outbox(engine, service="s")
    outbox.create_table()
    with engine.begin() as conn:
        add_order(outbox, conn, "ord_1")
    assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_1"]
    engine.dispose()


def test_create_table_with_autocommit_callable(tmp_path: Path) -> None:
    """A callable returning autocommit sqlite3 connections works for create_table and add."""
    path = tmp_path / "svc.db"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None)

    outbox = Outbox(connect, service="s")
    outbox.create_table()
    conn = connect()
    conn.execute("begin")
    add_order(outbox, conn, "ord_1")
    conn.execute("rollback")
    conn.execute("begin")
    add_order(outbox, conn, "ord_2")
    conn.execute("commit")
    conn.close()
    assert [r["aggregateid"] for r in outbox_rows(outbox)] == ["ord_2"]


# -- add() inside the caller's transaction ------------------------------------------------


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.parametrize("kind", ["dbapi", "sa_connection", "sa_session"])
def test_add_follows_the_business_transaction(db_url: str, kind: str, outcome: str) -> None:
    """The outbox row commits with the business row, and a rollback leaves neither."""
    outbox = Outbox(db_url, service="order-service")
    outbox.create_table()
    _create_orders(db_url)
    with business_transaction(kind, db_url) as (conn, insert_order):
        insert_order("ord_1")
        event = add_order(outbox, conn, "ord_1")
        getattr(conn, outcome)()
    expected = 1 if outcome == "commit" else 0
    assert (_count(db_url, "orders"), _count(db_url, "outbox")) == (expected, expected)
    if outcome == "commit":
        assert [(r["id"], r["seq"]) for r in outbox_rows(outbox)] == [(event.id, event.sequence)]


@pytest.mark.parametrize("kind", ["dbapi", "sa_connection", "sa_session"])
def test_add_never_commits(db_url: str, kind: str) -> None:
    """After add() the row is invisible to other connections until the caller commits."""
    outbox = Outbox(db_url, service="order-service")
    outbox.create_table()
    _create_orders(db_url)
    with business_transaction(kind, db_url) as (conn, insert_order):
        insert_order("ord_1")
        add_order(outbox, conn, "ord_1")
        if db_url.startswith("sqlite"):
            # SQLite's writer holds the lock: look through the file's committed state instead.
            reader = sqlite3.connect(db_url[len("sqlite:///"):], timeout=0)
            visible = reader.execute("select count(*) from outbox").fetchone()[0]
            reader.close()
        else:
            visible = _count(db_url, "outbox")
        assert visible == 0
        conn.rollback()


def test_add_writes_the_exact_row(db_url: str, tracer_provider: TracerProvider) -> None:
    """The row holds the event's ids, data, ce_* headers and the trace context of the current span."""
    outbox = Outbox(db_url, service="order-service")
    outbox.create_table()
    tracer = tracer_provider.get_tracer("test")
    conn = dbapi_connect(db_url)
    with tracer.start_as_current_span("POST /orders") as request:
        event = add_order(outbox, conn, "ord_7821", data={"order_id": "ord_7821", "items": [1, 2]})
    conn.commit()
    conn.close()
    ctx = request.get_span_context()
    [row] = outbox_rows(outbox)
    assert event == Event(
        id=event.id, type="order.placed", source="order-service", subject="ord_7821",
        correlation_id=event.id, causation_id=None, schema_version="1", time=event.time,
        sequence=row["seq"], data={"order_id": "ord_7821", "items": [1, 2]},
    )
    assert row == {
        "seq": row["seq"], "id": event.id, "aggregatetype": "orders", "aggregateid": "ord_7821",
        "type": "order.placed", "payload": {"order_id": "ord_7821", "items": [1, 2]},
        "headers": {
            "ce_specversion": "1.0", "ce_id": event.id, "ce_type": "order.placed",
            "ce_source": "order-service", "ce_time": event.time, "ce_subject": "ord_7821",
            "ce_schemaversion": "1", "ce_correlationid": event.id,
        },
        "tracingspancontext":
            f"traceparent={format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)}",
        "topic": None, "created_at": _dbapi.time_ms(event.time), "status": "pending",
        "attempts": 0, "next_attempt_at": None, "last_attempt_at": None, "last_error": None,
        "sent_at": None,
    }


def test_ce_time_has_microseconds_as_publish_stamps_it(tmp_path: Path) -> None:
    """An outbox row's ce_time has microseconds: one written just after a publish (same
    handler, same millisecond) never reads as older than it (consumers compare ce_time)."""
    from choreoscope.instrumentation._clock import epoch_us, utc_now_rfc3339

    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    conn = dbapi_connect(url)
    for n in range(50):
        published = utc_now_rfc3339()  # what publish() stamps
        event = add_order(outbox, conn, f"ord_{n}")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event.time)
        assert epoch_us(event.time) >= epoch_us(published)
    conn.commit()
    conn.close()


def test_add_inside_a_handler_inherits_the_chain(tmp_path: Path) -> None:
    """Inside a handler the event keeps the correlation id and is caused by the handled event."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="order-service")
    outbox.create_table()
    handled = Event(id="evt-1", type="payment.failed", source="payment-service",
                    correlation_id="corr-9")
    conn = dbapi_connect(url)
    with handling(handled):
        event = add_order(outbox, conn, "ord_1", event_type="order.cancelled")
    conn.commit()
    conn.close()
    [row] = outbox_rows(outbox)
    assert (event.correlation_id, event.causation_id) == ("corr-9", "evt-1")
    assert (row["headers"]["ce_correlationid"], row["headers"]["ce_causationid"]) == (
        "corr-9", "evt-1")


def test_add_inside_a_handler_of_an_event_with_only_a_trace_joins_its_flow(
        tmp_path: Path) -> None:
    """A handled event with no correlation id is keyed by its trace id in the collector: the
    outbox event takes that as its correlation id, so both are one flow."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="order-service")
    outbox.create_table()
    handled = Event(id="evt-1", type="payment.failed", source="payment-service",
                    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    conn = dbapi_connect(url)
    with handling(handled):
        event = add_order(outbox, conn, "ord_1", event_type="order.cancelled")
    conn.commit()
    conn.close()
    assert (event.correlation_id, event.causation_id) == (
        "0af7651916cd43dd8448eb211c80319c", "evt-1")


def test_add_inside_a_handler_of_an_idless_event_starts_its_own_chain(tmp_path: Path) -> None:
    """A handled event without id or correlation id (a bad envelope) leaves a root event."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    conn = dbapi_connect(url)
    with handling(Event(id=None, type=None, source=None)):
        event = add_order(outbox, conn, "ord_1")
    conn.commit()
    conn.close()
    [row] = outbox_rows(outbox)
    assert (event.correlation_id, event.causation_id) == (event.id, None)
    assert "ce_causationid" not in row["headers"]


def test_add_stores_tracestate_and_no_context_without_span(tmp_path: Path) -> None:
    """A current span's tracestate is stored on its own line; with no span nothing is stored."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    parent = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1")]))
    conn = dbapi_connect(url)
    with use_span(NonRecordingSpan(parent)):
        add_order(outbox, conn, "ord_1")
    add_order(outbox, conn, "ord_2")
    conn.commit()
    conn.close()
    assert [r["tracingspancontext"] for r in outbox_rows(outbox)] == [
        f"traceparent=00-{0xABC:032x}-{0xDEF:016x}-01\ntracestate=vendor=v1",
        None,
    ]


def test_add_topic_and_integer_aggregate_id(tmp_path: Path) -> None:
    """A topic given at write time is stored; an integer aggregate id is stored as text."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    [event] = commit_rows(outbox, url, "x", aggregateid=42, topic="orders.v2")
    [row] = outbox_rows(outbox)
    assert (row["aggregateid"], row["topic"], event.subject, event.topic) == (
        "42", "orders.v2", "42", "orders.v2")


def test_add_warns_once_for_a_type_not_in_past_tense(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A type like `order.place` is written anyway and logged once as a warning."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    with caplog.at_level(logging.WARNING, logger="choreoscope.instrumentation.outbox"):
        commit_rows(outbox, url, "ord_1", "ord_2", event_type="order.placeorderwarn")
    assert [r["type"] for r in outbox_rows(outbox)] == ["order.placeorderwarn"] * 2
    assert [r.getMessage().split(" does")[0] for r in caplog.records] == [
        "event type 'order.placeorderwarn'"]


# -- bad configuration and bad input ------------------------------------------------------


@pytest.mark.parametrize("table", ["", "out box", "outbox;drop table x", "1outbox", "a.b.c",
                                   '"outbox"', None])
def test_bad_table_name_is_rejected(tmp_path: Path, table: Any) -> None:
    """A table name that is not an identifier is rejected with what was expected."""
    with pytest.raises(ValueError, match="expected a table name") as info:
        Outbox(f"sqlite:///{tmp_path / 'x.db'}", table=table, service="s")
    assert f"got {table!r}" in str(info.value)


@pytest.mark.parametrize(
    ("db", "error", "message"),
    [
        (42, TypeError, "expected a database URL, a SQLAlchemy Engine or a zero-argument "
                        "callable returning a DB-API connection, got builtins.int"),
        ("sqlite://", ValueError, "expected a SQLite file path"),
        ("sqlite:///:memory:", ValueError, "expected a SQLite file path"),
        ("mysql://db/x", ValueError, "expected a sqlite:// or postgresql:// URL, got mysql://"),
        ("outbox.db", ValueError, "expected a URL like sqlite:///path"),
    ],
)
def test_bad_database_is_rejected(db: Any, error: type[Exception], message: str) -> None:
    """A database argument of the wrong kind is rejected at construction."""
    with pytest.raises(error) as info:
        Outbox(db, service="s")
    assert str(info.value).startswith(message)


def test_callable_returning_something_else_is_rejected() -> None:
    """A callable that returns no sqlite3/psycopg connection fails loudly on first use."""

    class Fake:
        closed = False

        def close(self) -> None:
            self.closed = True

    fake = Fake()
    outbox = Outbox(lambda: fake, service="s")
    with pytest.raises(TypeError, match=re.escape(
            "expected the outbox's callable to return a sqlite3 or psycopg connection, "
            "got tests.instrumentation.")):
        outbox.create_table()
    assert fake.closed


def test_bad_add_arguments_are_rejected_and_write_nothing(tmp_path: Path) -> None:
    """Wrong connection kinds, empty ids, bytes or NaN data raise and leave the table empty."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    conn = dbapi_connect(url)
    with pytest.raises(TypeError, match=re.escape(
            "expected a SQLAlchemy Connection or Session, or a sqlite3 or psycopg "
            "connection, got builtins.object")):
        add_order(outbox, object(), "ord_1")
    with pytest.raises(TypeError, match="expected aggregateid to be a non-empty string, got ''"):
        add_order(outbox, conn, "")
    with pytest.raises(TypeError, match="expected event_type to be a non-empty string, got None"):
        add_order(outbox, conn, "ord_1", event_type=None)
    with pytest.raises(TypeError, match="expected JSON-serialisable data, got bytes"):
        add_order(outbox, conn, "ord_1", data=b"\x00")
    with pytest.raises(ValueError, match=re.escape(
            "expected JSON data, got a value JSON cannot hold (Out of range float values")):
        add_order(outbox, conn, "ord_1", data={"amount": float("nan")})
    with pytest.raises(TypeError, match="cannot send a value of type object as JSON event data"):
        add_order(outbox, conn, "ord_1", data={"amount": object()})
    with pytest.raises(TypeError, match="expected service to be a non-empty string, got ''"):
        Outbox(url, service="")
    conn.commit()
    conn.close()
    assert outbox_rows(outbox) == []


@pytest.mark.postgres
def test_a_nul_character_is_refused_before_it_aborts_the_transaction(postgres_url: str) -> None:
    """PostgreSQL's jsonb cannot hold U+0000: add() says so before the insert, and the
    caller's transaction goes on (a backslash followed by u0000 is only text, and is kept)."""
    outbox = Outbox(postgres_url, service="s")
    outbox.create_table()
    conn = dbapi_connect(postgres_url)
    with pytest.raises(ValueError, match=re.escape(
            "expected JSON data PostgreSQL's jsonb can hold, got a text with a NUL character")):
        add_order(outbox, conn, "ord_1", data={"note": "a\x00b"})
    with pytest.raises(ValueError, match="NUL character"):
        add_order(outbox, conn, "ord_1", data={"a\x00": 1})
    add_order(outbox, conn, "ord_2", data={"note": "\\u0000"})
    conn.commit()
    conn.close()
    [row] = outbox_rows(outbox)
    assert (row["aggregateid"], row["payload"]) == ("ord_2", {"note": "\\u0000"})


def test_add_on_a_missing_table_raises_the_database_error(tmp_path: Path) -> None:
    """Without the table add() surfaces the database's error instead of losing the event."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    conn = dbapi_connect(url)
    with pytest.raises(sqlite3.OperationalError, match="no such table: outbox"):
        add_order(outbox, conn, "ord_1")
    conn.close()


def _autocommit(url: str) -> Any:
    """A DB-API connection in autocommit mode: every statement commits on its own."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
    return psycopg.connect(url, autocommit=True)


def test_an_autocommit_connection_without_a_transaction_is_refused(db_url: str) -> None:
    """In autocommit mode with no transaction open the row would commit apart from the
    caller's changes: refused, saying how to open one; inside one it is written, and a
    rollback takes it back with the rest."""
    from sqlalchemy import create_engine

    outbox = Outbox(db_url, service="orders")
    outbox.create_table()
    add = {"aggregatetype": "orders", "aggregateid": "ord_1", "event_type": "order.placed",
           "data": {}}
    engine = create_engine(sqlalchemy_url(db_url), isolation_level="AUTOCOMMIT")
    with closing(_autocommit(db_url)) as conn, engine.connect() as sa_conn:
        for given in (conn, sa_conn):
            with pytest.raises(TypeError, match=r"^expected a connection inside a transaction, "
                                                r"got one in autocommit mode with none open"):
                outbox.add(given, **add)
        if db_url.startswith("sqlite"):
            conn.execute("BEGIN")
            outbox.add(conn, **add)
            conn.rollback()
        else:
            with pytest.raises(RuntimeError, match="rolled back"), conn.transaction():
                outbox.add(conn, **add)
                raise RuntimeError("rolled back")
    engine.dispose()
    assert outbox_rows(outbox) == []
