"""Bus ingest against the real embedded broker: exact rows, idempotence, offsets, new topics."""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import func, select

from choreoscope.collector.ingest import BusIngest
from choreoscope.collector.ingest.share import DecodeShare
from choreoscope.collector.ingest.writer import ProcessWriter
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

pytestmark = pytest.mark.broker

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TS = 1_767_323_045_000
OBSERVED_S = 1_800_000_000.0
FAST = {"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS}


def _producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000,
                     "linger.ms": 5})


def _ingest(store: Store, bootstrap: str, topics: str, group: str, **kw) -> BusIngest:
    return BusIngest(store, bootstrap=bootstrap, topics=topics, group=group,
                     kafka_options=FAST, clock=lambda: OBSERVED_S, **kw)


def _produce_numbered(bootstrap: str, topic: str, count: int) -> None:
    """`count` records `{"i": 0}`, `{"i": 1}`, ... on partition 0."""
    p = _producer(bootstrap)
    for i in range(count):
        p.produce(topic, value=json.dumps({"i": i}).encode(), partition=0)
    p.flush(10)


def _until(ingest: BusIngest, count: int, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while ingest.records < count and time.monotonic() < deadline:
        ingest.step()
    assert ingest.records == count


def _rows(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(events).order_by(events.c.topic, events.c.offset))]


def _produce_mixed(bootstrap: str, topic: str) -> None:
    p = _producer(bootstrap)
    binary = [("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_type", b"order.placed"),
              ("ce_source", b"shop"), ("ce_time", b"2026-01-02T03:04:05Z"),
              ("ce_schemaversion", b"1"), ("ce_correlationid", b"c1"), ("traceparent", TP.encode())]
    structured = json.dumps({"specversion": "1.0", "id": "e2", "type": "payment.captured",
                             "source": "pay", "time": "2026-01-02T03:04:06Z",
                             "schemaversion": "1", "correlationid": "c1", "causationid": "e1",
                             "data": {"cardNumber": "4111", "amount": 3}}).encode()
    hand = json.dumps({"eventId": "e3", "eventType": "order.shipped", "version": 2,
                       "timestamp": "2026-01-02T03:04:07Z", "source": "ship",
                       "correlationId": "c1", "causationId": "e2", "data": {"to": "x"}}).encode()
    values = [
        (binary, b'{"total":3,"customer":{"email":"a@b.c"}}', b"ord_1"),
        ([("content-type", b"application/cloudevents+json")], structured, None),
        (None, hand, None),
        (None, b"\x00\x01 garbage", None),
        (binary, None, b"ord_1"),  # tombstone
        (None, json.dumps({"blob": "z" * 1_048_576}).encode(), None),  # ~1 MB
    ]
    for headers, value, key in values:
        p.produce(topic, value=value, key=key, headers=headers, partition=0, timestamp=TS)
    p.flush(30)


def _check_mixed(rows: list[dict], topic: str) -> None:
    assert [(r["topic"], r["partition"], r["offset"]) for r in rows] == [
        (topic, 0, i) for i in range(6)]
    summary = [(r["event_id"], r["type"], r["envelope"], r["flow_id"], r["causation_id"],
                r["problems"] and [p.split(":")[0] for p in json.loads(r["problems"])])
               for r in rows]
    assert summary == [
        ("e1", "order.placed", "binary", "c1", None, None),
        ("e2", "payment.captured", "structured", "c1", "e1", None),
        ("e3", "order.shipped", "json_envelope", "c1", "e2", None),
        (None, None, "unknown", f"{topic}/0/3", None, ["no_envelope", "undecodable_value"]),
        ("e1", "order.placed", "binary", "c1", None, None),
        (None, None, "unknown", f"{topic}/0/5", None, ["no_envelope"]),
    ]
    assert [r["data"] for r in rows[:3]] == [
        '{"total":3,"customer":{"email":"[REDACTED]"}}',
        '{"cardNumber":"[REDACTED]","amount":3}', '{"to":"x"}']
    assert (rows[4]["data"], rows[4]["data_size"]) == (None, None)
    big = json.loads(rows[5]["data"])
    assert (big["_truncated"], big["size"], rows[5]["data_truncated"]) == (True, 1_048_587, True)
    assert rows[5]["data_size"] == 1_048_588
    assert rows[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert {(r["broker_ts_ms"], r["observed_at_ms"]) for r in rows} == {(TS, 1_800_000_000_000)}


@pytest.mark.parametrize(("writer", "share"), [("process", None), ("process", 1.0),
                                               ("process", 0.0), ("thread", None)])
def test_mixed_records_become_exact_rows_and_offsets_are_committed(
        bootstrap: str, topic: str, group: str, tmp_path, writer: str,
        share: float | None) -> None:
    """Binary, structured, hand-written, garbage, tombstone and 1 MB records all land, once,
    whether a child process or a thread of the collector writes them, and whichever part
    of the batch the child decodes (its default share, all of it, none)."""
    _produce_mixed(bootstrap, topic)
    store = Store(f"sqlite:///{tmp_path}/c.db").create()
    with _ingest(store, bootstrap, topic, group, writer=writer) as ingest:
        if share is not None:
            ingest.share = DecodeShare(share=share, step=0.0)
        _until(ingest, 6)
        assert ingest.inserted == 6
        committed = ingest.consumer.committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 6
    _check_mixed(_rows(store), topic)
    # Another group reads everything again: nothing changes.
    before = _rows(store)
    with _ingest(store, bootstrap, topic, group + "-again") as again:
        _until(again, 6)
        assert again.inserted == 0
    assert _rows(store) == before
    store.dispose()


@pytest.mark.postgres
def test_postgres_store_gets_the_same_rows(
        bootstrap: str, topic: str, group: str, postgres_url: str) -> None:
    """The same records ingested into PostgreSQL give the same rows as into SQLite."""
    _produce_mixed(bootstrap, topic)
    store = Store(postgres_url).create()
    with _ingest(store, bootstrap, topic, group) as ingest:
        _until(ingest, 6)
        assert ingest.inserted == 6
    _check_mixed(_rows(store), topic)
    store.dispose()


def test_new_matching_topic_is_picked_up_without_restart(
        bootstrap: str, group: str, tmp_path) -> None:
    """A topic created after subscribing that matches the regex is ingested; others are not."""
    prefix = f"nt{uuid.uuid4().hex[:8]}"
    p = _producer(bootstrap)
    p.produce(f"{prefix}.first", value=b"{}")
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/n.db").create()
    with _ingest(store, bootstrap, rf"^{prefix}\..*", group) as ingest:
        _until(ingest, 1)
        p.produce(f"{prefix}.later", value=b"{}")
        p.produce(f"other{prefix}.later", value=b"{}")
        p.flush(10)
        _until(ingest, 2)
    assert sorted(r["topic"] for r in _rows(store)) == [f"{prefix}.first", f"{prefix}.later"]
    store.dispose()


def test_from_latest_skips_history(bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """A new group started with start='latest' ignores records already on the topic."""
    p = _producer(bootstrap)
    p.produce(topic, value=b'{"old":1}', partition=0)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/l.db").create()
    with _ingest(store, bootstrap, topic, group, start="latest") as ingest:
        assert ingest.run_to_end(idle_timeout_s=20) == 0
        while not ingest.consumer.assignment():
            ingest.step()
        p.produce(topic, value=b'{"new":1}', partition=0)
        p.flush(10)
        _until(ingest, 1)
    assert [(r["offset"], r["data"]) for r in _rows(store)] == [(1, '{"new":1}')]
    store.dispose()


def test_from_latest_reads_topics_created_later_from_their_start(
        bootstrap: str, group: str, tmp_path) -> None:
    """'latest' skips the history of the topics there at the start only: a topic created
    afterwards is read from its first record, even those written before the collector saw
    the topic (up to a metadata refresh later)."""
    prefix = f"lt{uuid.uuid4().hex[:8]}"
    p = _producer(bootstrap)
    p.produce(f"{prefix}.old", value=b'{"history":1}', partition=0)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/l.db").create()
    with _ingest(store, bootstrap, rf"^{prefix}\..*", group, start="latest") as ingest:
        while not ingest.consumer.assignment():
            ingest.step()
        p.produce(f"{prefix}.old", value=b'{"new":1}', partition=0)
        for i in range(3):
            p.produce(f"{prefix}.new", value=json.dumps({"i": i}).encode(), partition=0)
        p.flush(10)
        _until(ingest, 4)
    assert [(r["topic"], r["offset"]) for r in _rows(store)] == [
        (f"{prefix}.new", 0), (f"{prefix}.new", 1), (f"{prefix}.new", 2), (f"{prefix}.old", 1)]
    store.dispose()


def test_from_latest_on_restart_reads_what_came_meanwhile(
        bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """A group that has committed before skips nothing on restart, not even on partitions it
    never committed: what reached them while it was stopped is read."""
    p = _producer(bootstrap)
    p.produce(topic, value=b'{"history":0}', partition=0)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/r.db").create()
    with _ingest(store, bootstrap, topic, group, start="latest") as ingest:
        while not ingest.consumer.assignment():
            ingest.step()
        p.produce(topic, value=b'{"before":0}', partition=0)
        p.flush(10)
        _until(ingest, 1)
    for partition in (0, 1, 1, 2, 2):
        p.produce(topic, value=json.dumps({"meanwhile": partition}).encode(),
                  partition=partition)
    p.flush(10)
    with _ingest(store, bootstrap, topic, group, start="latest") as ingest:
        _until(ingest, 5)
    assert sorted((r["partition"], r["offset"]) for r in _rows(store)) == [
        (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1)]
    store.dispose()


def test_run_to_end_stops_at_the_end_offsets(bootstrap: str, topic: str, group: str,
                                             tmp_path) -> None:
    """run_to_end reads what is on the topic at the start and returns; a rerun reads nothing."""
    p = _producer(bootstrap)
    for i in range(50):
        p.produce(topic, value=json.dumps({"i": i}).encode(), partition=i % 3)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/o.db").create()
    with _ingest(store, bootstrap, topic, group) as ingest:
        assert ingest.run_to_end() == 50
    with _ingest(store, bootstrap, topic, group) as ingest:
        assert ingest.run_to_end() == 0
    assert len(_rows(store)) == 50
    store.dispose()


def test_run_to_end_waits_out_a_group_join(bootstrap: str, topic: str, group: str,
                                           tmp_path) -> None:
    """The broker answers the committed-offsets request only once a join in progress is done
    (here about 3 s, half the session timeout; 22 s with librdkafka's default of 45 s): a
    shorter request timeout is waited out, not an error, on the first run and on a rerun."""
    p = _producer(bootstrap)
    for i in range(20):
        p.produce(topic, value=json.dumps({"i": i}).encode(), partition=i % 3)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/j.db").create()
    for expected in (20, 0):
        with _ingest(store, bootstrap, topic, group) as ingest:
            time.sleep(1.0)  # the join has begun
            assert ingest.run_to_end(metadata_timeout_s=0.5) == expected
    assert len(_rows(store)) == 20
    store.dispose()


def test_run_to_end_reads_past_a_high_watermark_below_the_committed_offset(
        bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """Tansu's high watermark can lag behind the last records, below the group's committed
    offset: --once must still read what follows that offset once the group has assigned it
    its partitions, not stop at the first empty batch before the join."""
    _produce_numbered(bootstrap, topic, 30)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    c.close()

    class LaggingWatermark(BusIngest):
        def _end_offsets(self, timeout_s: float) -> dict[tuple[str, int], int]:
            return {(topic, 0): 5}  # what Tansu may report

    store = Store(f"sqlite:///{tmp_path}/w.db").create()
    with LaggingWatermark(store, bootstrap=bootstrap, topics=topic, group=group,
                          kafka_options=FAST, clock=lambda: OBSERVED_S) as ingest:
        assert ingest.run_to_end() == 20
    assert [r["offset"] for r in _rows(store)] == list(range(10, 30))
    store.dispose()


def test_unreachable_store_commits_nothing_and_loses_nothing(
        bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """While the store is down no offset is committed; a later run stores every record."""
    _produce_numbered(bootstrap, topic, 5)
    down = Store("postgresql://nobody@127.0.0.1:1/none")
    stop = threading.Event()
    stop.set()  # give up after the first failed attempt
    with _ingest(down, bootstrap, topic, group) as ingest:
        deadline = time.monotonic() + 60
        while ingest.store_failures == 0 and time.monotonic() < deadline:
            ingest.step(stop)
        ingest.drain()
        assert (ingest.store_failures, ingest.records) == (1, 0)
        committed = ingest.consumer.committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset < 0  # nothing committed
    store = Store(f"sqlite:///{tmp_path}/u.db").create()
    with _ingest(store, bootstrap, topic, group) as ingest:
        _until(ingest, 5)
    assert [r["offset"] for r in _rows(store)] == [0, 1, 2, 3, 4]
    store.dispose()


def test_internal_topics_are_skipped(bootstrap: str, group: str, tmp_path) -> None:
    """Records of topics whose names start with __ are never stored."""
    name = f"__internal{uuid.uuid4().hex[:6]}"
    p = _producer(bootstrap)
    p.produce(name, value=b"{}")
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/i.db").create()
    with _ingest(store, bootstrap, "^__internal.*", group) as ingest:
        _until(ingest, 1)
    assert _rows(store) == []
    store.dispose()


def test_kafka_consumer_sees_the_committed_group_offsets(bootstrap, topic, group, tmp_path):
    """The group's committed offsets are visible to any Kafka client after ingest."""
    p = _producer(bootstrap)
    p.produce(topic, value=b"{}", partition=1)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/k.db").create()
    with _ingest(store, bootstrap, topic, group) as ingest:
        _until(ingest, 1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    assert c.committed([TopicPartition(topic, 1)], timeout=10)[0].offset == 1
    c.close()
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1
    store.dispose()


class _BrokenRedactor:
    """A redactor with a bug: every record hits it."""

    def data_json(self, data, raw=None):
        raise RuntimeError("bug")

    def headers_json(self, headers):
        return None


def test_a_bug_while_building_a_row_keeps_the_record(bootstrap, topic, group, tmp_path) -> None:
    """A failure while building a row stores the record's position with an ingest_error."""
    p = _producer(bootstrap)
    p.produce(topic, value=b'{"a":1}', partition=0, timestamp=TS)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/b.db").create()
    with _ingest(store, bootstrap, topic, group, redactor=_BrokenRedactor()) as ingest:
        assert ingest.share is None  # a redactor of the caller's own: all decoded here
        _until(ingest, 1)
    [row] = _rows(store)
    assert (row["offset"], row["envelope"], row["flow_id"], row["broker_ts_ms"]) == (
        0, "unknown", f"{topic}/0/0", TS)
    assert json.loads(row["problems"]) == [
        "ingest_error: RuntimeError: only the position was kept"]
    store.dispose()


def test_nothing_is_committed_past_a_batch_given_up(bootstrap, topic, group, tmp_path) -> None:
    """After a batch is given up on shutdown, later batches are neither stored nor committed."""
    _produce_numbered(bootstrap, topic, 6)
    down = Store("postgresql://nobody@127.0.0.1:1/none")
    good = Store(f"sqlite:///{tmp_path}/g.db").create()
    stop = threading.Event()
    stop.set()
    with _ingest(down, bootstrap, topic, group, batch_size=2) as ingest:
        deadline = time.monotonic() + 60
        while ingest.store_failures == 0 and time.monotonic() < deadline:
            ingest.step(stop)
        ingest.drain()
        ingest.store = good  # the store is back, but the batch in between is lost to this run
        assert [ingest.step(stop) for _ in range(3)] == [0, 0, 0]
        ingest.drain()
        committed = ingest.consumer.committed([TopicPartition(topic, 0)], timeout=10)
    assert (committed[0].offset < 0, _rows(good)) == (True, [])
    with _ingest(good, bootstrap, topic, group) as again:
        _until(again, 6)
    assert [r["offset"] for r in _rows(good)] == [0, 1, 2, 3, 4, 5]
    good.dispose()


def test_killing_the_writer_process_loses_nothing(bootstrap, topic, group, tmp_path) -> None:
    """SIGKILL of the writer process while batches are in flight: they are stored again in
    order by a new writer, every record lands once, and the committed offsets reach the end."""
    _produce_numbered(bootstrap, topic, 600)
    store = Store(f"sqlite:///{tmp_path}/w.db").create()
    with _ingest(store, bootstrap, topic, group, batch_size=50, writer="process") as ingest:
        deadline = time.monotonic() + 60
        while ingest.consumed_offsets.get((topic, 0), 0) < 150 and time.monotonic() < deadline:
            ingest.step()
        child = ingest.writer._process
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        _until(ingest, 600)
        ingest.drain()
        committed = ingest.consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert ingest.writer.restarts >= 1
    assert committed[0].offset == 600
    assert [r["offset"] for r in _rows(store)] == list(range(600))
    store.dispose()


class _KillBeforeSecondSend(ProcessWriter):
    """The real writer process, killed right before the second batch is handed to it, with
    the answer for the first batch not read yet (the second one waiting in the ingest's
    queue)."""

    def __init__(self, url: str, ingest_queue: Any = None) -> None:
        super().__init__(url)
        self.ingest_queue = ingest_queue
        self.sends = 0

    def send(self, *args: Any, **kw: Any) -> None:
        self.sends += 1
        if self.sends == 1:
            super().send(*args, **kw)
            deadline = time.monotonic() + 30
            while self.ingest_queue.qsize() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # the next batch is read before this one is answered
            return
        if self.sends == 2:
            process, conn = self._process, self._conn
            assert process is not None and process.pid is not None and conn is not None
            assert conn.poll(30)  # the first batch is stored, its answer not read yet
            os.kill(process.pid, signal.SIGKILL)
            process.join(10)
        super().send(*args, **kw)


class _Order(collections.deque):
    """The ingest's stored-not-committed batches, remembering the order they were added."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[int] = []

    def append(self, batch: Any) -> None:
        self.added.append(min(batch.offsets.values()))
        super().append(batch)


def test_a_writer_dying_before_a_send_keeps_the_batches_in_order(
        bootstrap, topic, group, tmp_path) -> None:
    """The writer dies as the second batch is handed over, the first unanswered: the first is
    recorded as stored (its offsets committed) before the second, never after it; every row
    lands once and the count of new rows is exact."""
    _produce_numbered(bootstrap, topic, 150)
    store = Store(f"sqlite:///{tmp_path}/o.db").create()
    ingest = _ingest(store, bootstrap, topic, group, batch_size=50, writer="process")
    writer = _KillBeforeSecondSend(str(store.url), ingest._queue)
    ingest.writer = writer
    ingest.share = None
    ingest._stored = order = _Order()
    with ingest:
        _until(ingest, 150)
        ingest.drain()
        committed = ingest.consumer.committed([TopicPartition(topic, 0)], timeout=10)
    assert writer.sends >= 3 and writer.restarts >= 1
    assert order.added == sorted(order.added)
    assert (committed[0].offset, ingest.inserted) == (150, 150)
    assert [r["offset"] for r in _rows(store)] == list(range(150))
    store.dispose()


def test_a_writer_that_does_not_answer_is_logged_while_it_lasts(
        bootstrap, topic, group, tmp_path, monkeypatch, caplog) -> None:
    """A stopped writer (or a store that holds it) shows in the log while ingest waits, not
    only once its error comes; when it goes on, every record is stored once."""
    from choreoscope.collector.ingest import consumer

    monkeypatch.setattr(consumer, "ANSWER_PATIENCE_S", 0.5)
    _produce_numbered(bootstrap, topic, 100)
    store = Store(f"sqlite:///{tmp_path}/s.db").create()
    caplog.set_level("WARNING", logger="choreoscope.collector.ingest.consumer")
    with _ingest(store, bootstrap, topic, group, batch_size=50, writer="process") as ingest:
        child = ingest.writer._process
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while ingest.consumed_offsets.get((topic, 0), 0) < 100 and (
                    time.monotonic() < deadline):
                ingest.step()
            time.sleep(1.6)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        _until(ingest, 100)
    waits = [r.getMessage() for r in caplog.records if "has not answered" in r.getMessage()]
    assert waits[:3] == [
        f"ingest: the store writer has not answered for {s:.0f}s (store locked or slow?); "
        "offsets not committed" for s in (0.5, 1.0, 1.5)]
    assert [r["offset"] for r in _rows(store)] == list(range(100))
    store.dispose()


def test_the_metrics_say_while_batches_cannot_be_stored(
        bootstrap, topic, group, tmp_path) -> None:
    """`choreoscope_ingest_store_failing` is 1 while the store refuses the batches (the
    store-derived metrics cannot say it: they read a store that may still be readable), and
    0 again once a batch is stored; the failures are counted."""
    from prometheus_client import CollectorRegistry, generate_latest

    from choreoscope.collector.metrics import IngestMetrics

    def scrape() -> tuple[float, float]:
        samples = {line.split()[0]: float(line.split()[1])
                   for line in generate_latest(registry).decode().splitlines()
                   if line.startswith("choreoscope_ingest_store_fail")}
        return (samples["choreoscope_ingest_store_failing"],
                samples["choreoscope_ingest_store_failures_total"])

    _produce_numbered(bootstrap, topic, 3)
    down = Store("postgresql://nobody@127.0.0.1:1/none")
    good = Store(f"sqlite:///{tmp_path}/m.db").create()
    ingest = None
    registry = CollectorRegistry()
    registry.register(IngestMetrics(lambda: ingest))
    assert scrape() == (0, 0)
    ingest = _ingest(down, bootstrap, topic, group, writer="thread")
    with ingest:
        deadline = time.monotonic() + 60
        while ingest.store_failures == 0 and time.monotonic() < deadline:
            ingest.step()
        assert scrape()[0] == 1
        ingest.writer.store = good  # the store is back: the batch in hand is stored
        _until(ingest, 3)
    failing, failures = scrape()
    assert (failing, failures >= 1) == (0, True)
    assert [r["offset"] for r in _rows(good)] == [0, 1, 2]
    good.dispose()


def test_a_member_left_without_partitions_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """Two minutes without a partition is logged once, then every ten minutes while it lasts;
    an assignment resets the clock."""
    from choreoscope.collector.ingest.consumer import _Unassigned

    idle = _Unassigned(now=0.0)
    with caplog.at_level("WARNING", logger="choreoscope.collector.ingest.consumer"):
        said = [t for t in (60, 119, 120, 121, 600, 720, 730) if idle.check(False, t, "g1")]
        assert not idle.check(True, 800, "g1")
        said += [t for t in (900, 1019, 1020) if idle.check(False, t, "g1")]
    assert said == [120, 720, 1020]
    assert caplog.messages[0] == ("ingest: group g1 has given this collector no partition for "
                                  "120s: other members hold them all, or the group cannot form "
                                  "(see the broker)")


def test_the_garbage_collector_is_paused_only_while_a_batch_is_read(
        bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """A step leaves the collector as it found it: on after a batch, after an empty
    consume and after a failing one; and a caller's pause is not ended by ingest."""
    import gc

    p = _producer(bootstrap)
    p.produce(topic, value=b'{"n": 1}')
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/gc.db").create()
    seen: list[bool] = []
    with _ingest(store, bootstrap, f"^{topic}$", group) as ingest:
        consumer = ingest.start().consumer

        class Watching:
            """The real consumer; notes whether the collector ran during each consume."""

            def __getattr__(self, name: str):
                return getattr(consumer, name)

            def consume(self, *args, **kwargs):
                seen.append(gc.isenabled())
                return consumer.consume(*args, **kwargs)

        ingest.consumer = Watching()
        _until(ingest, 1)
        assert gc.isenabled()
        assert ingest.step(timeout_s=0.1) == 0  # nothing more: an empty consume
        assert gc.isenabled()
        gc.disable()
        try:
            ingest.step(timeout_s=0.1)
            assert not gc.isenabled()
        finally:
            gc.enable()

        class Failing:
            def __getattr__(self, name: str):
                return getattr(consumer, name)

            def consume(self, *args, **kwargs):
                raise RuntimeError("consume failed")

        ingest.consumer = Failing()
        with pytest.raises(RuntimeError, match="consume failed"):
            ingest.step(timeout_s=0.1)
        assert gc.isenabled()
        ingest.consumer = consumer
    assert seen and not any(seen)
    assert [r["data"] for r in _rows(store)] == ['{"n":1}']
    store.dispose()


def test_a_batch_leaves_its_last_records_undecoded_as_asked(
        bootstrap: str, topic: str, group: str) -> None:
    """build_batch decodes all but the last `defer` records; decoding those afterwards
    (as the writer process does) gives exactly the rows of decoding everything at once.
    Offsets and counts cover the whole batch either way."""
    from choreoscope.collector.ingest import Redactor, build_batch
    from choreoscope.collector.ingest.batch import rows_of

    _produce_mixed(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", **FAST})
    consumer.subscribe([topic])
    messages: list = []
    deadline = time.monotonic() + 60
    while len(messages) < 6 and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(6, timeout=1) if m.error() is None]
    consumer.close()
    assert len(messages) == 6
    redactor = Redactor()
    whole = build_batch(messages, redactor, 5000)
    assert (len(whole.rows), whole.raw, whole.offsets) == (6, [], {(topic, 0): 6})
    for defer in range(7):
        batch = build_batch(messages, redactor, 5000, defer)
        assert ([r[2] for r in batch.rows], [r[2] for r in batch.raw]) == (
            list(range(6 - defer)), list(range(6 - defer, 6)))
        assert (len(batch), batch.offsets, batch.observed_at_ms) == (6, whole.offsets, 5000)
        assert rows_of(batch.rows, batch.raw, redactor, 5000) == whole.rows


def test_events_of_an_unsampled_trace_are_stored_as_such_and_never_untraced(
        bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """A service whose sampler records nothing still sends a traceparent (flags 00): the
    collector keeps the flag, fetches no trace for it, and a pass never calls it untraced,
    however long its trace stays away. The sampled service beside it is waited for."""
    from kafka import KafkaProducer
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from choreoscope.collector.analyze import AnalysisOptions, analyze
    from choreoscope.collector.query import list_anomalies, list_flows
    from choreoscope.instrumentation import instrument_producer
    from tests.collector.reconstruct.factory import ev, put
    from tests.collector.reconstruct.factory import producer as producer_span

    for name, sampler in (("sampled-service", ALWAYS_ON), ("unsampled-service", ALWAYS_OFF)):
        provider = TracerProvider(sampler=sampler)
        producer = instrument_producer(KafkaProducer(bootstrap_servers=bootstrap),
                                       service=name, tracer_provider=provider)
        producer.publish(topic, "order.placed", {"by": name}, key=name)
        producer.flush(10)
        producer.close()
        provider.shutdown()
    store = Store(f"sqlite:///{tmp_path}/s.db").create()
    with _ingest(store, bootstrap, topic, group) as ingest:
        _until(ingest, 2)
    rows = {r["source"]: r for r in _rows(store)}
    assert {s: (r["trace_id"] is not None, r["trace_sampled"]) for s, r in rows.items()} == {
        "sampled-service": (True, True), "unsampled-service": (True, False)}
    put(store, span_rows=[producer_span(ev("x1", "x.happened", flow="x"))])  # tracing is on
    later_ms = int(OBSERVED_S * 1000) + 3_600_000  # an hour on: every grace time is over
    analyze(store, AnalysisOptions(untraced_grace_s=120), now_ms=later_ms)
    assert [(a["service"], a["subkind"]) for a in list_anomalies(store, kind="untraced")] == [
        ("sampled-service", "trace_missing")]
    assert {f["services"][0]: f["trace_status"] for f in list_flows(store)
            if f["event_count"]} == {"sampled-service": "unavailable",
                                     "unsampled-service": "unsampled"}
    store.dispose()


def test_from_latest_stopped_before_reading_anything_reads_what_came_meanwhile(
        bootstrap: str, topic: str, group: str, tmp_path) -> None:
    """A new group started with 'latest' skips history once: stopped before it read a
    record, it starts again where it stood, and reads what reached the topic meanwhile
    (every cron run of `collect --once --from latest` would skip it otherwise)."""
    p = _producer(bootstrap)
    p.produce(topic, value=b'{"history":0}', partition=0)
    p.flush(10)
    store = Store(f"sqlite:///{tmp_path}/r.db").create()
    with _ingest(store, bootstrap, topic, group, start="latest") as ingest:
        assert ingest.run_to_end(idle_timeout_s=20) == 0
    p.produce(topic, value=b'{"meanwhile":0}', partition=0)
    p.produce(topic, value=b'{"meanwhile":1}', partition=1)
    p.flush(10)
    with _ingest(store, bootstrap, topic, group, start="latest") as ingest:
        _until(ingest, 2)
    assert sorted((r["partition"], r["offset"], r["data"]) for r in _rows(store)) == [
        (0, 1, '{"meanwhile":0}'), (1, 0, '{"meanwhile":1}')]
    store.dispose()


def test_debug_logging_says_what_was_stored_and_committed(
        bootstrap: str, topic: str, group: str, tmp_path,
        caplog: pytest.LogCaptureFixture) -> None:
    """`collect -v`: each commit says how many records were stored and up to which offsets."""
    _produce_numbered(bootstrap, topic, 3)
    store = Store(f"sqlite:///{tmp_path}/d.db").create()
    with caplog.at_level("DEBUG", logger="choreoscope.collector.ingest.consumer"), \
            _ingest(store, bootstrap, topic, group) as ingest:
        _until(ingest, 3)
        ingest.drain()
    said = [r.getMessage() for r in caplog.records if "records stored, committing" in r.getMessage()]
    assert said and said[-1].endswith(f"{topic}/0@3")
    assert sum(int(m.split()[1]) for m in said) == 3
    store.dispose()


def test_options_holding_secrets_are_masked_in_the_log_line() -> None:
    """Every librdkafka option that holds a secret is masked where the options are logged:
    passwords, client secrets, private keys inline, JAAS and OAUTHBEARER configs."""
    from choreoscope.collector.ingest.consumer import describe_options

    secret = {k: "s3cret" for k in (
        "sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
        "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config", "sasl.jaas.config",
        "ssl_key", "sasl.oauthbearer.token.endpoint.url.credentials")}
    plain = {"bootstrap.servers": "kafka:9092", "group.id": "g", "sasl.username": "me",
             "sasl.mechanism": "PLAIN", "session.timeout.ms": 6000}
    assert describe_options({**secret, **plain}) == {**dict.fromkeys(secret, "***"), **plain}
