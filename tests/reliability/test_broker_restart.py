"""The broker stopped and restarted on the same port under a running collector, instrumented
producers and the outbox relay: the collector reconnects by itself, producers surface errors to
the caller, the relay keeps rows pending and publishes them in order once the broker is back.

Tansu keeps everything in memory: after the restart the topics are gone, so what is sent after
it goes to a new topic (auto-created) that the collector's regex subscription picks up."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError
from opentelemetry.trace import StatusCode
from sqlalchemy import select

from choreoscope.collector.broker import EmbeddedBroker
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from choreoscope.instrumentation import instrument_producer
from choreoscope.instrumentation.outbox import Outbox
from choreoscope.instrumentation.relay import OutboxRelay
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.instrumentation._bus import CountingProducer
from tests.reliability._process import stop
from tests.reliability._wait import wait_for

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, since the test stops it."""
    b = EmbeddedBroker().start()
    yield b
    b.stop()


def _stored(url: str, topic: str) -> list[tuple]:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(events.c.subject, events.c.sequence, events.c.event_id, events.c.type)
                .where(events.c.topic == topic).order_by(events.c.partition, events.c.offset))]
    except Exception:  # noqa: BLE001 - schema not created yet
        return []
    finally:
        store.dispose()


def _old_id(url: str, topic: str) -> str:
    """The id of the topic `topic` replaced, from its events' archived name."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            names = conn.execute(select(events.c.topic).distinct()
                                 .where(events.c.topic.startswith(f"{topic}~"))).scalars().all()
        assert len(names) <= 1, names
        return names[0].split("~", 1)[1] if names else ""
    finally:
        store.dispose()


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, max_block_ms=1000,
                         request_timeout_ms=3000, delivery_timeout_ms=5000, retries=0,
                         linger_ms=0,
                         reconnect_backoff_max_ms=500)


def test_broker_restart_under_collector_producers_and_relay(
        own_broker, tmp_path: Path, tracer_provider, span_exporter) -> None:
    """Errors reach the producer's caller, outbox rows wait, and everything arrives after."""
    bootstrap = own_broker.bootstrap
    before, after = "rs.before", "rs.after"
    url = f"sqlite:///{tmp_path}/collector.db"
    log = tmp_path / "collector.log"
    cmd = [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
           "--bootstrap", bootstrap, "--topics", r"^rs\..*", "--group", "g-restart",
           "--otlp-port", "0", "--analyze-interval", "3600", "--batch-size", "50",
           "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
           "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"]
    collector = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    kafka = _producer(bootstrap)
    traced = instrument_producer(kafka, service="shop", tracer_provider=tracer_provider)
    box = Outbox(f"sqlite:///{tmp_path}/svc.db", service="shop")
    box.create_table()
    relay = OutboxRelay(box, kafka, topic_for=lambda _t: after, backoff=lambda _n: 0.05, send_timeout=3,
                        tracer_provider=tracer_provider)
    try:
        for i in range(20):
            traced.send(before, {"n": i}, key=b"k").get(timeout=30)
        wait_for("the first events", lambda: len(_stored(url, before)) == 20)

        own_broker.stop()
        with pytest.raises(KafkaError):  # synchronously or through the future
            traced.send(before, {"n": "lost?"}, key=b"k").get(timeout=30)
        failed = [s for s in span_exporter.get_finished_spans()
                  if s.status.status_code == StatusCode.ERROR]
        assert [s.name for s in failed] == [f"send {before}"]

        conn = sqlite3.connect(f"{tmp_path}/svc.db")
        for i in range(6):  # two aggregates, written while the broker is away
            box.add(conn, aggregatetype="order", aggregateid=f"ord-{i % 2}",
                    event_type="order.placed", data={"i": i})
            conn.commit()
        conn.close()
        for _ in range(7):  # the relay keeps trying through the outage, past max_attempts
            assert relay.run_once() == 0
            time.sleep(0.3)
        rows = _outbox_rows(tmp_path / "svc.db")
        assert max(attempts for *_x, attempts in rows) > relay.max_attempts
        assert {status for _seq, _agg, status, _attempts in rows} == {"pending"}, rows

        own_broker.start()  # the same port
        assert collector.poll() is None, log.read_text()[-2000:]
        sent = 0
        deadline = time.monotonic() + 90
        while sent < 6 and time.monotonic() < deadline:
            sent += relay.run_once()
            time.sleep(0.2)
        assert sent == 6
        assert [status for *_x, status, _a in _outbox_rows(tmp_path / "svc.db")] == ["sent"] * 6
        for i in range(10):
            traced.send(after, {"m": i}, key=b"k").get(timeout=30)
        wait_for("events after the restart", lambda: len(_stored(url, after)) == 16, 120)
        stored = _stored(url, after)
        for aggregate in ("ord-0", "ord-1"):
            seqs = [seq for subject, seq, _id, _t in stored if subject == aggregate]
            assert seqs == sorted(seqs) and len(seqs) == 3, stored
        # Nothing from before the outage is lost. If `before` came back as a new, empty topic
        # (the producer's metadata requests create it), its old events are kept apart.
        kept = _stored(url, before) or _stored(url, f"{before}~{_old_id(url, before)}")
        assert len(kept) == 20
        assert collector.poll() is None
    finally:
        kafka.close(timeout=5)
        stop(collector)
    assert collector.returncode == 0, log.read_text()[-3000:]


def _outbox_rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("select seq, aggregateid, status, attempts from outbox order by seq"
                            ).fetchall()
    finally:
        conn.close()


def test_a_producer_a_restart_left_in_a_fatal_state_makes_no_row_dead(
        own_broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """kafka-python's default producer is idempotent: after the broker restarts, it fails every
    send with errors Kafka does not call retriable (the broker forgot its producer id). That is
    the producer's state, not the rows': past max_attempts they stay pending, said once, and a
    new producer sends them in order."""
    box = Outbox(f"sqlite:///{tmp_path}/svc.db", service="shop")
    box.create_table()

    def write(n: int) -> None:
        conn = sqlite3.connect(f"{tmp_path}/svc.db")
        for i in range(n):
            box.add(conn, aggregatetype="fatal", aggregateid=f"ord-{i % 2}",
                    event_type="order.placed", data={"i": i})
            conn.commit()
        conn.close()

    def relay_until(relay: OutboxRelay, done: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            relay.run_once()
            time.sleep(0.1)

    kafka = KafkaProducer(bootstrap_servers=own_broker.bootstrap, request_timeout_ms=3000,
                          max_block_ms=2000, reconnect_backoff_max_ms=500)
    assert kafka.config["enable_idempotence"] is True  # kafka-python's default
    relay = OutboxRelay(box, kafka, max_attempts=2, backoff=lambda _n: 0.05, send_timeout=3)
    try:
        write(2)
        relay_until(relay, lambda: relay.run_once() == 0 and _statuses(tmp_path) == ["sent"] * 2,
                    30)
        assert _statuses(tmp_path) == ["sent"] * 2
        own_broker.stop()
        own_broker.start()  # the same port, an empty broker
        write(4)
        with caplog.at_level(logging.ERROR, logger="choreoscope.instrumentation.relay"):
            relay_until(relay, lambda: max(a for *_x, a in _outbox_rows(tmp_path / "svc.db"))
                        > relay.max_attempts + 2, 60)
        rows = _outbox_rows(tmp_path / "svc.db")
        assert [status for _seq, _agg, status, _a in rows] == ["sent"] * 2 + ["pending"] * 4, rows
        assert max(a for *_x, a in rows) > relay.max_attempts
        logged = [r.getMessage() for r in caplog.records if "producer fails" in r.getMessage()]
        assert 1 <= len(logged) <= 3, logged  # once per kind of error, never per row or round
    finally:
        kafka.close(timeout=5)
    fresh = KafkaProducer(bootstrap_servers=own_broker.bootstrap)
    try:
        relay_until(OutboxRelay(box, fresh, backoff=lambda _n: 0.05),
                    lambda: _statuses(tmp_path) == ["sent"] * 6, 60)
    finally:
        fresh.close(timeout=5)
    assert _statuses(tmp_path) == ["sent"] * 6


def _statuses(tmp_path: Path) -> list[str]:
    return [status for _seq, _agg, status, _a in _outbox_rows(tmp_path / "svc.db")]


def test_a_send_in_flight_through_an_outage_is_not_sent_again(
        own_broker, tmp_path: Path) -> None:
    """A record the producer holds while the broker is away outlives the round that sent it:
    the producer delivers it when the broker is back. The relay used to mark the row for a
    retry and send a new copy every round of the outage (each one delivered later, all with
    one ce_id); now the row waits for that record's fate: sent once its ack comes, sent
    again only if it fails. (Counted at the producer: Tansu, keeping topics in memory, does
    not keep what it acks across its restart for a consumer to read.)"""
    topic = "inflight"
    box = Outbox(f"sqlite:///{tmp_path}/svc.db", service="shop")
    box.create_table()

    def write(aggregateid: str) -> None:
        conn = sqlite3.connect(f"{tmp_path}/svc.db")
        box.add(conn, aggregatetype=topic, aggregateid=aggregateid, event_type="order.placed",
                data={"order": aggregateid})
        conn.commit()
        conn.close()

    kafka = CountingProducer(bootstrap_servers=own_broker.bootstrap, enable_idempotence=False,
                              max_block_ms=1000, request_timeout_ms=2000,
                              delivery_timeout_ms=30000, reconnect_backoff_max_ms=300,
                              linger_ms=0)
    relay = OutboxRelay(box, kafka, backoff=lambda _n: 0.0, send_timeout=1)
    try:
        write("ord-0")
        assert relay.run_once() == 1  # the producer knows the topic's partitions now
        own_broker.stop()
        write("ord-1")
        write("ord-2")
        for _ in range(4):  # rounds through the outage: nothing acked, nothing sent again
            assert relay.run_once() == 0
        rows = _outbox_rows(tmp_path / "svc.db")
        assert [(agg, status, attempts) for _s, agg, status, attempts in rows] == [
            ("ord-0", "sent", 1), ("ord-1", "pending", 1), ("ord-2", "pending", 1)]
        own_broker.start()  # the same port
        deadline = time.monotonic() + 60
        while _statuses(tmp_path) != ["sent"] * 3 and time.monotonic() < deadline:
            relay.run_once()
            time.sleep(0.2)
        assert _statuses(tmp_path) == ["sent"] * 3
    finally:
        relay.close()
        kafka.close(timeout=5)
    assert kafka.sends == Counter({b"ord-0": 1, b"ord-1": 1, b"ord-2": 1})
