"""add() and the relay read rows the same whatever row factory the connections were opened with."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaProducer
from psycopg.rows import dict_row, namedtuple_row, tuple_row

from choreoscope.instrumentation.outbox import Outbox
from choreoscope.instrumentation.relay import OutboxRelay
from tests.instrumentation.test_outbox import add_order
from tests.instrumentation.test_relay import by_key, consume_all, statuses


@pytest.fixture(scope="module")
def producer(bootstrap: str) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=bootstrap)
    yield p
    p.close()


def _sqlite_dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: value for d, value in zip(cursor.description, row, strict=True)}


def _add_and_relay(
    connect: Callable[[], Any], producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """Two events of one aggregate and one of another, added and relayed on `connect()`s."""
    outbox = Outbox(connect, service="s")
    outbox.create_table()
    conn = connect()
    try:
        events = [add_order(outbox, conn, oid, aggregatetype=topic, data={"n": n})
                  for n, oid in enumerate(["ord_1", "ord_1", "ord_2"])]
        conn.commit()
    finally:
        conn.close()
    assert [e.sequence for e in events] == [1, 2, 3]
    relay = OutboxRelay(outbox, producer, max_attempts=1)
    try:
        assert relay.run_once() == 3
    finally:
        relay.close()
    assert statuses(outbox) == [("ord_1", "sent", 1), ("ord_1", "sent", 1), ("ord_2", "sent", 1)]
    records = consume_all(bootstrap, topic)
    assert by_key(records) == {"ord_1": [1, 2], "ord_2": [3]}
    assert sorted(r.value for r in records) == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.parametrize("row_factory", [dict_row, namedtuple_row, tuple_row],
                         ids=["dict_row", "namedtuple_row", "tuple_row"])
def test_psycopg_row_factories(
    postgres_url: str, row_factory: Any, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """psycopg connections opened with any row factory work for add() and for the relay."""
    _add_and_relay(lambda: psycopg.connect(postgres_url, row_factory=row_factory),
                   producer, bootstrap, topic)


@pytest.mark.broker
@pytest.mark.parametrize("row_factory", [sqlite3.Row, _sqlite_dict_row],
                         ids=["sqlite3.Row", "dict"])
def test_sqlite_row_factories(
    tmp_path: Path, row_factory: Any, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """sqlite3 connections with a row_factory (sqlite3.Row, or one making dicts) work too."""
    path = tmp_path / "svc.db"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path)
        conn.row_factory = row_factory
        return conn

    _add_and_relay(connect, producer, bootstrap, topic)


@pytest.mark.postgres
def test_add_on_a_dict_row_connection_inside_a_transaction_block(postgres_url: str) -> None:
    """add() on a dict_row connection in `with conn.transaction()` gives the row's seq."""
    outbox = Outbox(postgres_url, service="s")
    outbox.create_table()
    with psycopg.connect(postgres_url, row_factory=dict_row) as conn:
        with conn.transaction():
            first = add_order(outbox, conn, "ord_1")
            second = add_order(outbox, conn, "ord_2")
        assert conn.execute("select count(*) as n from outbox").fetchone() == {"n": 2}
    assert (first.sequence, second.sequence) == (1, 2)


@pytest.mark.broker
@pytest.mark.postgres
def test_relay_on_dict_row_connections(
    postgres_url: str, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """Rows written on a plain connection are relayed through an outbox opening dict_row ones."""
    Outbox(postgres_url, service="s").create_table()
    with psycopg.connect(postgres_url) as conn:
        add_order(Outbox(postgres_url, service="s"), conn, "ord_1", aggregatetype=topic)
    outbox = Outbox(lambda: psycopg.connect(postgres_url, row_factory=dict_row), service="s")
    assert OutboxRelay(outbox, producer, max_attempts=1).run_once() == 1
    assert statuses(outbox) == [("ord_1", "sent", 1)]
    assert [(r.key, json.loads(r.value)) for r in consume_all(bootstrap, topic)] == [
        (b"ord_1", {"order_id": "ord_1", "amount": 12.5})]
