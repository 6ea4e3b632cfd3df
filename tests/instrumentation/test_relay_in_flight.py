"""The outbox relay and records still in its producer when their round ends: held back from
every relay until acked, failed or given up; and a round that a stop, a lock or another
thread interrupts. On the embedded broker and real databases."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from choreoscope.collector.broker import EmbeddedBroker
from choreoscope.instrumentation.outbox import Outbox
from choreoscope.instrumentation.relay import OutboxRelay
from tests.instrumentation._bus import CountingProducer
from tests.instrumentation.test_outbox import commit_rows, outbox_rows
from tests.instrumentation.test_relay import consume_all, db_url, outbox  # noqa: F401

pytestmark = pytest.mark.broker


def _relay_until(relay: OutboxRelay, producer: KafkaProducer, rows: int) -> int:
    """Passes of `relay`, each after the producer's lingering records went out, until `rows`
    rows were marked sent (or a minute passed); how many were."""
    sent = 0
    deadline = time.monotonic() + 60
    while sent < rows and time.monotonic() < deadline:
        producer.flush(timeout=30)
        sent += relay.run_once()
    return sent


def _write(box: Outbox, url: str, topic: str, *aggregates: str) -> None:
    for n, aggregate in enumerate(aggregates):
        commit_rows(box, url, aggregate, aggregatetype=topic, data={"n": n})


def _numbers(bootstrap: str, topic: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in consume_all(bootstrap, topic):
        out.setdefault(r.key.decode(), []).append(json.loads(r.value)["n"])
    return out


def test_a_row_in_flight_is_held_back_from_every_relay(
    outbox: Outbox, db_url: str, bootstrap: str, topic: str,  # noqa: F811
) -> None:
    """Relay A's records linger in its producer past the round. Another relay, and a relay
    made after A's `close()`, used to send those rows again at once, and the late copies
    landed behind the aggregates' later rows. Now they leave them alone; A, used again,
    marks them sent once acked, and each aggregate arrives once and in order."""
    _write(outbox, db_url, topic, "a1", "a2", "a1", "a2")  # seqs 1-4: two per aggregate
    slow = CountingProducer(bootstrap_servers=bootstrap, linger_ms=3000)
    fast = CountingProducer(bootstrap_servers=bootstrap)
    a = OutboxRelay(outbox, slow, send_timeout=0.5, backoff=0.0)
    try:
        assert a.run_once() == 0  # both heads sent, their acks still to come
        a.close()
        for other in (OutboxRelay(outbox, fast, backoff=0.0), OutboxRelay(outbox, slow)):
            assert other.run_once() == 0
            other.close()
        assert [(r["status"], r["attempts"]) for r in outbox_rows(outbox)] == [
            ("pending", 1), ("pending", 1), ("pending", 0), ("pending", 0)]
        assert _relay_until(a, slow, 4) == 4
    finally:
        a.close()
        slow.close(timeout=5)
        fast.close(timeout=5)
    assert slow.sends + fast.sends == Counter({b"a1": 2, b"a2": 2})
    assert _numbers(bootstrap, topic) == {"a1": [0, 2], "a2": [1, 3]}


def test_a_record_the_producer_never_answers_is_given_up(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """A producer can hold a record with no ack and no error past its delivery timeout (an
    idempotent one after an outage). Its row is held back only for the time the relay
    derives from that timeout; then the record is given up, said once, its span ended, and
    the row sent again."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    box = Outbox(url, service="s")
    box.create_table()
    _write(box, url, topic, "a1")
    with EmbeddedBroker() as own:
        kafka = CountingProducer(bootstrap_servers=own.bootstrap, linger_ms=0,
                                 request_timeout_ms=30_000)
        relay = OutboxRelay(box, kafka, send_timeout=0.3, backoff=0.0,
                            tracer_provider=tracer_provider)
        relay._in_flight_ms = 1000  # the derived time (delivery timeout + 30 s), shortened
        kafka.partitions_for(topic)  # its metadata known: the send below is not held for it
        os.kill(own.process.pid, signal.SIGSTOP)  # the broker takes the record, never answers
        try:
            with caplog.at_level(logging.WARNING, logger="choreoscope.instrumentation.relay"):
                assert relay.run_once() == 0
                assert relay.run_once() == 0  # held back
                time.sleep(1.2)
                relay.run_once()  # given up, and sent again
        finally:
            os.kill(own.process.pid, signal.SIGCONT)
            relay.close()
            kafka.close(timeout=5)
    assert kafka.sends == Counter({b"a1": 2})
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "no ack and no error; its row (seq 1) is sent again" in \
        warnings[0]
    first = span_exporter.get_finished_spans()[0]
    assert first.status.description.endswith("no answer from the producer within 1000 ms")


def test_a_lock_after_the_sends_loses_no_record_in_flight(
    tmp_path: Path, bootstrap: str, topic: str,
) -> None:
    """The service holds SQLite's write lock past the relay's busy timeout while the round
    waits for acks: marking fails and the pass raises. The records still in the producer
    stay known: a later pass marks their rows sent, none sent twice."""
    path = tmp_path / "svc.db"
    writer = Outbox(f"sqlite:///{path}", service="s")
    writer.create_table()
    _write(writer, f"sqlite:///{path}", topic, "a1", "a2")
    box = Outbox(f"sqlite:///{path}?timeout=0.2", service="s")  # the relay's: waits 0.2 s
    kafka = CountingProducer(bootstrap_servers=bootstrap, linger_ms=1500)
    relay = OutboxRelay(box, kafka, send_timeout=0.5, backoff=0.0)
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        while sum(kafka.sends.values()) < 2:  # the round has sent both heads
            time.sleep(0.005)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("begin immediate")
        locked.set()
        release.wait(30)
        conn.execute("commit")
        conn.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            relay.run_once()
        assert locked.is_set()
        release.set()
        holder.join(30)
        assert _relay_until(relay, kafka, 2) == 2
    finally:
        release.set()
        relay.close()
        kafka.close(timeout=5)
    assert kafka.sends == Counter({b"a1": 1, b"a2": 1})
    assert [r["status"] for r in outbox_rows(box)] == ["sent", "sent"]


def test_no_send_starts_once_stopped_while_a_claim_waited(
    tmp_path: Path, bootstrap: str, topic: str,
) -> None:
    """Stopped while its claim waits for the service's write lock, the relay sends nothing
    when the lock comes free: it returns, the rows as they were."""
    path = tmp_path / "svc.db"
    url = f"sqlite:///{path}"
    box = Outbox(url, service="s")
    box.create_table()
    _write(box, url, topic, "a1", "a2")
    kafka = CountingProducer(bootstrap_servers=bootstrap)
    relay = OutboxRelay(box, kafka)
    stop = threading.Event()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("begin immediate")
    worker = threading.Thread(target=relay.run_forever, args=(stop, 0.05))
    worker.start()
    try:
        time.sleep(0.5)  # the relay's claim waits for the lock
        stop.set()
        lock.execute("commit")
        worker.join(30)
    finally:
        lock.close()
        kafka.close(timeout=5)
    assert not worker.is_alive()
    assert kafka.sends == Counter()
    assert [(r["status"], r["attempts"], r["next_attempt_at"]) for r in outbox_rows(box)] == [
        ("pending", 0, None), ("pending", 0, None)]


def test_a_relay_runs_from_any_thread(tmp_path: Path, bootstrap: str, topic: str) -> None:
    """A scheduler may call run_once from a pool of threads: each call works (a SQLite
    connection used to refuse the second thread, failing that pass), and close() from
    another thread closes the connection."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    box = Outbox(url, service="s")
    box.create_table()
    kafka = KafkaProducer(bootstrap_servers=bootstrap)
    relay = OutboxRelay(box, kafka)
    results: list[Any] = []

    def pass_in_a_thread() -> None:
        try:
            results.append(relay.run_once())
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            results.append(exc)

    try:
        _write(box, url, topic, "a1")
        assert relay.run_once() == 1
        _write(box, url, topic, "a2")
        other = threading.Thread(target=pass_in_a_thread)
        other.start()
        other.join(30)
        assert results == [1]
        closer = threading.Thread(target=relay.close)
        closer.start()
        closer.join(30)
        assert relay._conn is None
    finally:
        kafka.close(timeout=5)
