"""A topic deleted and created again under its name (ingest/topics.py): the old topic's
events are kept under `NAME~OLD_ID`, the new topic's are stored from its first record."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from sqlalchemy import func, select

from choreoscope.collector.admin import admin_client
from choreoscope.collector.ingest.topics import (
    TopicGenerations,
    archived_name,
    record_topic_id,
)
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events, topic_ids
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop
from tests.reliability._wait import wait_for

OLD_ID = "AaIYMYYbcEKs8Or3N3nVbQ"
NEW_ID = "AaIYMZ+pcMOmxZnvzgkKIA"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    url = (f"sqlite:///{tmp_path}/t.db" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    s = Store(url).create()
    yield s
    s.dispose()


def _put(store: Store, topic: str, offsets: range) -> None:
    rows = [{"topic": topic, "partition": 0, "offset": o, "event_id": f"{topic}-{o}",
             "flow_id": f"f{o}", "observed_at_ms": 1, "envelope": "binary",
             "data_truncated": False} for o in offsets]
    with store.engine.begin() as conn:
        store.insert_ignore(conn, events, rows)


def _by_topic(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(events.c.topic, func.count()).group_by(events.c.topic)).all())


def _ids(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(topic_ids.c.topic, topic_ids.c.topic_id)).all())


def test_first_sight_and_same_id_change_nothing(store) -> None:
    _put(store, "orders", range(3))
    assert record_topic_id(store, "orders", OLD_ID, 1000) is None
    assert record_topic_id(store, "orders", OLD_ID, 2000) is None
    assert (_ids(store), _by_topic(store)) == ({"orders": OLD_ID}, {"orders": 3})


def test_a_new_id_keeps_the_old_events_under_the_archived_name(store) -> None:
    _put(store, "orders", range(5))
    _put(store, "payments", range(2))
    record_topic_id(store, "orders", OLD_ID, 1000)
    assert record_topic_id(store, "orders", NEW_ID, 2000) == f"orders~{OLD_ID}"
    assert _ids(store) == {"orders": NEW_ID}
    assert _by_topic(store) == {f"orders~{OLD_ID}": 5, "payments": 2}
    _put(store, "orders", range(3))  # the new topic's records land on free positions
    assert _by_topic(store) == {f"orders~{OLD_ID}": 5, "orders": 3, "payments": 2}
    assert record_topic_id(store, "orders", NEW_ID, 3000) is None  # seen: nothing more moves
    assert _by_topic(store)["orders"] == 3


@pytest.mark.postgres
def test_of_collectors_racing_exactly_one_renames(postgres_url) -> None:
    stores = [Store(postgres_url).create() for _ in range(6)]
    try:
        _put(stores[0], "orders", range(4))
        record_topic_id(stores[0], "orders", OLD_ID, 1000)
        results: list[str | None] = []
        start = threading.Barrier(len(stores))

        def check(store: Store) -> None:
            start.wait()
            results.append(record_topic_id(store, "orders", NEW_ID, 2000))

        threads = [threading.Thread(target=check, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results, key=str) == [None] * 5 + [f"orders~{OLD_ID}"]
        assert _by_topic(stores[0]) == {f"orders~{OLD_ID}": 4}
    finally:
        for s in stores:
            s.dispose()


def test_archived_names_fit_a_topic_column() -> None:
    assert archived_name("orders", OLD_ID) == f"orders~{OLD_ID}"
    long = archived_name("t" * 249, OLD_ID)
    assert (len(long), long.endswith(f"~{OLD_ID}")) == (255, True)


def test_a_broker_that_cannot_be_reached_detects_nothing(store, caplog) -> None:
    _put(store, "orders", range(2))
    generations = TopicGenerations(store, lambda: admin_client("127.0.0.1:1"), timeout_s=1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "choreoscope.collector.ingest.topics"):
        assert generations.recreated(["orders", "payments"]) == set()
    assert time.monotonic() - started < 10
    assert (_ids(store), _by_topic(store)) == ({}, {"orders": 2})
    assert "no topic id for 2 of 2 topics (orders: " in caplog.text


@pytest.mark.broker
def test_the_broker_id_of_a_recreated_topic_is_new(bootstrap, topic, tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path}/b.db").create()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        _put(store, topic, range(2))
        generations = TopicGenerations(store, lambda: admin_client(bootstrap))
        assert generations.recreated([topic, "__consumer_offsets"]) == set()
        first = _ids(store)[topic]
        assert generations.recreated([topic]) == set()
        admin.delete_topics([topic])
        wait_for("the topic gone", lambda: topic not in admin.list_topics(), 30)
        admin.create_topics([NewTopic(topic, 1, 1)])
        assert generations.recreated([topic]) == {topic}
        assert _by_topic(store) == {f"{topic}~{first}": 2}
        assert _ids(store)[topic] != first
    finally:
        admin.close()
        store.dispose()


@pytest.mark.broker
def test_collect_stores_a_recreated_topic_from_its_first_record(
        bootstrap, topic, group, tmp_path) -> None:
    """Five events, the topic deleted and created again with three: all eight are stored."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    url = f"sqlite:///{tmp_path}/c.db"
    store = Store(url)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        for i in range(5):
            producer.send(topic, b'{"generation":1,"n":%d}' % i)
        producer.flush()
        log = tmp_path / "collect.log"
        with log.open("w") as err:
            proc = subprocess.Popen([
                sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
                "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
                "--otlp-port", "0", "--analyze-interval", "3600",
                "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"], stderr=err)
        try:
            wait_for("the first topic stored", lambda: _by_topic(store) == {topic: 5},
                     ignoring=(Exception,))
            first = _ids(store)[topic]
            admin.delete_topics([topic])
            wait_for("the topic gone", lambda: topic not in admin.list_topics(), 30)
            time.sleep(1)
            admin.create_topics([NewTopic(topic, 1, 1)])
            for i in range(3):
                producer.send(topic, b'{"generation":2,"n":%d}' % i)
            producer.flush()
            wait_for("the new topic stored",
                     lambda: _by_topic(store) == {f"{topic}~{first}": 5, topic: 3})
        finally:
            stop(proc)
        assert proc.returncode == 0
        with store.engine.connect() as conn:
            data = conn.execute(select(events.c.topic, events.c.offset, events.c.data)
                                .order_by(events.c.topic, events.c.offset)).all()
        assert [tuple(r) for r in data] == (
            [(topic, i, f'{{"generation":2,"n":{i}}}') for i in range(3)]
            + [(f"{topic}~{first}", i, f'{{"generation":1,"n":{i}}}') for i in range(5)])
        assert "was deleted and created again" in log.read_text()
    finally:
        producer.close()
        admin.close()
        store.dispose()
