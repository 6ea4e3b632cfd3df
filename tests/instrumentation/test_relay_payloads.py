"""Outbox payloads, headers and trace contexts reach the bus exactly as they were written.

PostgreSQL's driver decodes json/jsonb columns itself and SQLite gives text: the relay must
neither decode a JSON string payload twice nor depend on how the column is declared.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaProducer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from choreoscope.instrumentation import semconv, wire
from choreoscope.instrumentation.decoder import decode_record
from choreoscope.instrumentation.outbox import Outbox
from choreoscope.instrumentation.relay import OutboxRelay
from tests.instrumentation._bus import PARENT_SPAN_ID, TRACE_ID, TRACEPARENT
from tests.instrumentation.test_outbox import DATABASES, dbapi_connect, sqlalchemy_url
from tests.instrumentation.test_relay import consume_all, statuses

pytestmark = pytest.mark.broker

# Strings that read as other JSON values ("123", "null", an object's text) must stay strings.
PAYLOADS: list[Any] = [
    "hello", "", "123", "null", '{"x":1}', '"quoted"', "ünïcödé\nline", "true",
    0, 1.5, -7, True, False, None, [1, 2], [], {"a": "b"}, {}, {"nested": {"k": [None, "v"]}},
]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty service database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def producer(bootstrap: str) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=bootstrap)
    yield p
    p.close()


def _add_all(outbox: Outbox, conn: Any, topic: str) -> None:
    for i, data in enumerate(PAYLOADS):
        outbox.add(conn, aggregatetype=topic, aggregateid=f"p{i}", event_type="thing.happened",
                   data=data)


def _write_payloads(outbox_db: str, via: str, topic: str) -> Outbox:
    """An outbox holding one committed row per payload, written on a connection of kind `via`."""
    if via == "dbapi":
        outbox = Outbox(outbox_db, service="svc")
        outbox.create_table()
        conn = dbapi_connect(outbox_db)
        try:
            _add_all(outbox, conn, topic)
            conn.commit()
        finally:
            conn.close()
        return outbox
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(outbox_db))
    outbox = Outbox(engine, service="svc")  # the relay reads through engine.raw_connection()
    outbox.create_table()
    with engine.begin() as sa_conn:
        _add_all(outbox, sa_conn, topic)
    return outbox


def _records_by_index(bootstrap: str, topic: str) -> dict[int, Any]:
    records = consume_all(bootstrap, topic)
    by_index = {int(r.key.decode()[1:]): r for r in records}
    assert len(by_index) == len(records) == len(PAYLOADS)
    return by_index


@pytest.mark.parametrize("via", ["dbapi", "sqlalchemy"])
def test_every_payload_arrives_as_it_was_added(
    db_url: str, via: str, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """Each payload goes out as `publish` would send it (JSON, text or a tombstone) and decodes
    back to the value added, on SQLite and PostgreSQL, through plain and SQLAlchemy connections."""
    outbox = _write_payloads(db_url, via, topic)
    relay = OutboxRelay(outbox, producer, max_attempts=1)
    try:
        assert relay.run_once() == len(PAYLOADS)
    finally:
        relay.close()
    assert {status for _, status, _ in statuses(outbox)} == {"sent"}
    for i, record in _records_by_index(bootstrap, topic).items():
        data = PAYLOADS[i]
        value, content_type = wire.encode_value(data)
        headers = dict(record.headers)
        assert (record.value, headers.get("content-type")) == (
            value, content_type.encode() if content_type else None), data
        decoded = decode_record(record.headers, record.value)
        assert (decoded.data, type(decoded.data)) == (data, type(data))
        assert decoded.problems == []


def test_a_json_serializer_gets_exactly_the_value_added(
    db_url: str, bootstrap: str, topic: str,
) -> None:
    """A producer serializing values as JSON puts on the bus exactly the JSON of what was added."""
    outbox = _write_payloads(db_url, "dbapi", topic)
    raw = KafkaProducer(bootstrap_servers=bootstrap,
                        value_serializer=lambda v: json.dumps(v).encode())
    try:
        assert OutboxRelay(outbox, raw, max_attempts=1).run_once() == len(PAYLOADS)
    finally:
        raw.close(timeout=5)
    for i, record in _records_by_index(bootstrap, topic).items():
        assert record.value == json.dumps(PAYLOADS[i]).encode()


@pytest.mark.postgres
def test_hand_made_postgres_table_with_json_text_and_jsonb_columns(
    postgres_url: str, producer: KafkaProducer, bootstrap: str, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """A table declaring payload `json`, headers `text` and tracingspancontext `jsonb` (a JSON
    string of Debezium's lines, or an object) is read by its text, not by the driver's decoding."""
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "create table events_outbox (seq bigint generated always as identity primary key,"
            " id uuid not null, aggregatetype varchar(255) not null,"
            " aggregateid varchar(255) not null, type varchar(255) not null, payload json,"
            " headers text not null default '{}', tracingspancontext jsonb, topic varchar(255),"
            " created_at timestamptz not null default now(),"
            " status varchar(16) not null default 'pending', attempts integer not null default 0,"
            " next_attempt_at timestamptz, last_attempt_at timestamptz, last_error text,"
            " sent_at timestamptz)")
        rows = [
            ('"123"', '{"tenant": "acme"}', json.dumps(f"traceparent={TRACEPARENT}")),
            ('{"x": 1}', "{}", json.dumps({"traceparent": TRACEPARENT, "tracestate": "k=v"})),
            ("null", "{}", None),
            ('"null"', '{"ce_source": "billing"}', "{}"),
        ]
        for n, (payload, headers, context) in enumerate(rows):
            conn.execute(
                "insert into events_outbox (id, aggregatetype, aggregateid, type, payload,"
                " headers, tracingspancontext) values (gen_random_uuid(), %s, %s,"
                " 'invoice.issued', %s::json, %s, %s::jsonb)",
                (topic, f"r{n}", payload, headers, context))
    outbox = Outbox(postgres_url, table="events_outbox", service="svc")
    relay = OutboxRelay(outbox, producer, tracer_provider=tracer_provider, max_attempts=1)
    assert relay.run_once() == len(rows)
    relay.close()
    records = {r.key: r for r in consume_all(bootstrap, topic)}
    got = [(records[k].value, dict(records[k].headers).get("content-type"))
           for k in (b"r0", b"r1", b"r2", b"r3")]
    text = b"text/plain; charset=utf-8"
    assert got == [(b"123", text), (b'{"x":1}', None), (None, None), (b"null", text)]
    assert dict(records[b"r0"].headers)["tenant"] == b"acme"
    assert dict(records[b"r3"].headers)["ce_source"] == b"billing"
    assert dict(records[b"r1"].headers)["tracestate"] == b"k=v"
    spans = {s.attributes[semconv.MESSAGING_MESSAGE_ID]: s
             for s in span_exporter.get_finished_spans()}
    parents = {}
    for key, record in records.items():
        span = spans[dict(record.headers)["ce_id"].decode()]
        parents[key] = (span.parent.trace_id, span.parent.span_id) if span.parent else None
    assert parents == {b"r0": (TRACE_ID, PARENT_SPAN_ID), b"r1": (TRACE_ID, PARENT_SPAN_ID),
                       b"r2": None, b"r3": None}


def test_hand_made_sqlite_table_with_a_json_column(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """SQLite gives a column declared `json` numeric affinity (the text `123` is stored as an
    integer): its value is still read as the JSON text it was written as."""
    path = tmp_path / "svc.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "create table outbox (seq integer primary key autoincrement, id text not null,"
        " aggregatetype text not null, aggregateid text not null, type text not null,"
        " payload json, headers json not null default '{}', tracingspancontext text, topic text,"
        " created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),"
        " status text not null default 'pending', attempts integer not null default 0,"
        " next_attempt_at text, last_attempt_at text, last_error text, sent_at text)")
    for n, payload in enumerate(["123", '"123"', "1.5", '"x"']):
        conn.execute(
            "insert into outbox (id, aggregatetype, aggregateid, type, payload)"
            " values (?, ?, ?, 'invoice.issued', ?)", (f"id-{n}", topic, f"r{n}", payload))
    conn.commit()
    assert conn.execute("select typeof(payload) from outbox order by seq").fetchall() == [
        ("integer",), ("text",), ("real",), ("text",)]
    conn.close()
    outbox = Outbox(f"sqlite:///{path}", service="svc")
    assert OutboxRelay(outbox, producer, max_attempts=1).run_once() == 4
    records = sorted(consume_all(bootstrap, topic), key=lambda r: r.key)
    assert [(r.key, r.value) for r in records] == [
        (b"r0", b"123"), (b"r1", b"123"), (b"r2", b"1.5"), (b"r3", b"x")]
    assert [decode_record(r.headers, r.value).data for r in records] == [123, "123", 1.5, "x"]
