"""The outbox relay on the embedded broker, against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, KafkaTimeoutError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from choreoscope.instrumentation import semconv
from choreoscope.instrumentation.context import handling
from choreoscope.instrumentation.decoder import decode_record
from choreoscope.instrumentation.event import Event
from choreoscope.instrumentation.outbox import Outbox
from choreoscope.instrumentation.relay import OutboxRelay
from choreoscope.instrumentation.traceparent import format_traceparent
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.instrumentation.test_outbox import (
    DATABASES,
    add_order,
    commit_rows,
    dbapi_connect,
    outbox_rows,
    sqlalchemy_url,
)

pytestmark = pytest.mark.broker
BAD_TOPIC = "bad topic!"  # kafka-python refuses it: a real, immediate send failure


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty service database: a SQLite file or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def outbox(db_url: str) -> Outbox:
    box = Outbox(db_url, service="order-service")
    box.create_table()
    return box


@pytest.fixture(scope="module")
def producer(bootstrap: str) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=bootstrap)
    yield p
    p.close()


def consume_all(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record now on `topic`, read up to the end offsets of all its partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        enable_auto_commit=False,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, "records did not arrive"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def by_key(records: list[ConsumerRecord]) -> dict[str, list[int]]:
    """ce_sequence values of the records, per key, in bus order."""
    out: dict[str, list[int]] = defaultdict(list)
    for r in records:
        out[r.key.decode()].append(int(dict(r.headers)["ce_sequence"]))
    return dict(out)


def statuses(outbox: Outbox) -> list[tuple[str, str, int]]:
    return [(r["aggregateid"], r["status"], r["attempts"]) for r in outbox_rows(outbox)]


def make_stale(outbox: Outbox, url: str) -> None:
    """Pretend every backoff has elapsed (instead of waiting for it)."""
    conn = dbapi_connect(url)
    conn.cursor().execute(
        f"update {outbox.table} set next_attempt_at = null where status = 'pending'")
    conn.commit()
    conn.close()


# -- publishing ----------------------------------------------------------------------------


def test_relay_publishes_rows_with_headers_and_one_trace(
    db_url: str, outbox: Outbox, producer: KafkaProducer, bootstrap: str, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """Rows go out with their ce_* headers, seq as ce_sequence, and a send span in the writer's trace."""
    tracer = tracer_provider.get_tracer("test")
    handled = Event(id="evt-1", type="payment.failed", source="payment-service",
                    correlation_id="corr-9")
    conn = dbapi_connect(db_url)
    with tracer.start_as_current_span("POST /orders") as request:
        first = add_order(outbox, conn, "ord_1", aggregatetype=topic)
        with handling(handled):
            second = add_order(outbox, conn, "ord_2", aggregatetype=topic,
                               event_type="order.cancelled", data={"reason": "payment"})
    conn.commit()
    conn.close()
    span_exporter.clear()

    relay = OutboxRelay(outbox, producer, tracer_provider=tracer_provider)
    assert relay.run_once() == 2
    assert relay.run_once() == 0
    relay.close()

    records = consume_all(bootstrap, topic)
    spans = {s.attributes[semconv.MESSAGING_MESSAGE_ID]: s for s in span_exporter.get_finished_spans()}
    assert sorted(spans) == sorted([first.id, second.id])
    request_ctx = request.get_span_context()
    for event in (first, second):
        [record] = [r for r in records if dict(r.headers)["ce_id"] == event.id.encode()]
        span = spans[event.id]
        ctx = span.get_span_context()
        assert (span.name, span.kind, span.status.status_code) == (
            f"send {topic}", SpanKind.PRODUCER, StatusCode.UNSET)
        assert (ctx.trace_id, span.parent.span_id, span.parent.is_remote) == (
            request_ctx.trace_id, request_ctx.span_id, True)
        delay = span.attributes[semconv.OUTBOX_DELAY_MS]
        assert isinstance(delay, int) and delay >= 0
        expected_event = Event(**{**_envelope(event), "sequence": event.sequence})
        assert dict(span.attributes) == {
            **semconv.send_attributes(topic, expected_event, event.subject),
            semconv.OUTBOX_DELAY_MS: delay,
        }
        expected_headers = [
            ("ce_specversion", b"1.0"), ("ce_id", event.id.encode()),
            ("ce_type", event.type.encode()), ("ce_source", b"order-service"),
            ("ce_time", event.time.encode()), ("ce_subject", event.subject.encode()),
            ("ce_schemaversion", b"1"), ("ce_correlationid", event.correlation_id.encode()),
        ]
        if event.causation_id:
            expected_headers.append(("ce_causationid", event.causation_id.encode()))
        expected_headers += [
            ("ce_sequence", str(event.sequence).encode()),
            ("traceparent", format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags).encode()),
        ]
        assert record.headers == expected_headers
        assert record.key == event.subject.encode()
        decoded = decode_record(record.headers, record.value, topic=topic)
        assert (decoded.problems, decoded.data, decoded.sequence) == ([], event.data, event.sequence)
    assert (second.correlation_id, second.causation_id) == ("corr-9", "evt-1")
    rows = outbox_rows(outbox)
    assert [(r["status"], r["attempts"], r["last_error"]) for r in rows] == [("sent", 1, None)] * 2
    assert all(r["sent_at"] is not None and r["sent_at"] == r["last_attempt_at"] for r in rows)


def _envelope(event: Event) -> dict[str, Any]:
    fields = ("id", "type", "source", "subject", "correlation_id", "causation_id",
              "schema_version", "time")
    return {f: getattr(event, f) for f in fields}


def test_row_without_stored_context_gets_a_root_span(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """A row written outside any span is sent under a new root span, not the relay's ambient one."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    [event] = commit_rows(outbox, url, "ord_1", aggregatetype=topic)
    relay = OutboxRelay(outbox, producer, tracer_provider=tracer_provider)
    with tracer_provider.get_tracer("test").start_as_current_span("relay loop"):
        assert relay.run_once() == 1
    [send] = [s for s in span_exporter.get_finished_spans() if s.name == f"send {topic}"]
    [record] = consume_all(bootstrap, topic)
    ctx = send.get_span_context()
    assert (send.parent, dict(record.headers)["traceparent"]) == (
        None, format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags).encode())
    assert dict(record.headers)["ce_id"] == event.id.encode()


def test_topic_for_and_row_topic_route_records(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """topic_for maps the aggregate type to a topic; a topic given at write time wins."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "ord_1", aggregatetype="orders")
    commit_rows(outbox, url, "ord_2", aggregatetype="orders", topic=f"{topic}.override")
    relay = OutboxRelay(outbox, producer, topic_for=lambda agg: f"{topic}.{agg}")
    assert relay.run_once() == 2
    assert [r.key for r in consume_all(bootstrap, f"{topic}.orders")] == [b"ord_1"]
    assert [r.key for r in consume_all(bootstrap, f"{topic}.override")] == [b"ord_2"]


def test_relay_accepts_a_traced_producer_and_an_engine(
    db_url: str, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """A wrapper exposing `.wrapped` is bypassed for the plain producer; an Engine is a valid db."""
    from sqlalchemy import create_engine

    class TracedLike:
        wrapped = producer

        def send(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the relay must use the plain producer")

    engine = create_engine(sqlalchemy_url(db_url))
    outbox = Outbox(engine, service="s")
    outbox.create_table()
    with engine.begin() as conn:
        add_order(outbox, conn, "ord_1", aggregatetype=topic)
    relay = OutboxRelay(outbox, TracedLike())
    assert relay.run_once() == 1
    relay.close()
    engine.dispose()
    assert [r.key for r in consume_all(bootstrap, topic)] == [b"ord_1"]


def test_relay_under_an_active_kafka_instrumentor_sends_one_traceparent(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """With OpenTelemetry's KafkaInstrumentor active, a relayed row is one send span (the
    relay's) and one `traceparent`, not a second root span and a second header."""
    from opentelemetry.instrumentation.kafka import KafkaInstrumentor

    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "ord_1", aggregatetype=topic)
    instrumentor = KafkaInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        relay = OutboxRelay(outbox, producer, tracer_provider=tracer_provider)
        assert relay.run_once() == 1
        relay.close()
    finally:
        instrumentor.uninstrument()
    (record,) = consume_all(bootstrap, topic)
    traceparents = [v.decode() for k, v in record.headers if k == "traceparent"]
    sends = [s for s in span_exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert [s.name for s in sends] == [f"send {topic}"]
    assert traceparents == [format_traceparent(sends[0].context.trace_id,
                                               sends[0].context.span_id,
                                               sends[0].context.trace_flags)]


def test_relay_hands_data_and_key_to_the_producers_serializers(
    tmp_path: Path, bootstrap: str, topic: str,
) -> None:
    """A producer with its own serializers gets the row's data and key as objects, as publish
    gives them: not our JSON bytes (which a JSON serializer cannot encode again)."""
    import json

    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "ord_1", aggregatetype=topic)
    raw = KafkaProducer(bootstrap_servers=bootstrap,
                        value_serializer=lambda v: json.dumps(v, sort_keys=True).encode(),
                        key_serializer=lambda k: k.upper().encode())
    try:
        assert OutboxRelay(outbox, raw, max_attempts=1).run_once() == 1
    finally:
        raw.close(timeout=5)
    [record] = consume_all(bootstrap, topic)
    assert (record.key, record.value) == (b"ORD_1", b'{"amount": 12.5, "order_id": "ord_1"}')
    assert "content-type" not in dict(record.headers)
    assert statuses(outbox) == [("ord_1", "sent", 1)]


@pytest.mark.postgres
def test_relay_works_on_an_autocommit_psycopg_connection(
    postgres_url: str, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """A callable returning autocommit psycopg connections still gets a claiming transaction."""
    outbox = Outbox(lambda: psycopg.connect(postgres_url, autocommit=True), service="s")
    outbox.create_table()
    commit_rows(outbox, postgres_url, "ord_1", "ord_2", aggregatetype=topic)
    assert OutboxRelay(outbox, producer).run_once() == 2
    assert sorted(r.key for r in consume_all(bootstrap, topic)) == [b"ord_1", b"ord_2"]


def test_relay_works_on_autocommit_sqlite_connections(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """A callable returning sqlite3 connections in autocommit mode (isolation_level=None) works."""
    path = tmp_path / "svc.db"
    outbox = Outbox(lambda: sqlite3.connect(path, isolation_level=None), service="s")
    outbox.create_table()
    commit_rows(outbox, f"sqlite:///{path}", "ord_1", "ord_1", aggregatetype=topic)
    commit_rows(outbox, f"sqlite:///{path}", "ord_2", aggregatetype=topic, topic=BAD_TOPIC)
    relay = OutboxRelay(outbox, producer, max_attempts=1)
    assert relay.run_once() == 2
    relay.close()
    assert statuses(outbox) == [("ord_1", "sent", 1), ("ord_1", "sent", 1), ("ord_2", "dead", 1)]
    assert by_key(consume_all(bootstrap, topic)) == {"ord_1": [1, 2]}


def test_batch_size_bounds_one_pass(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """One pass sends at most batch_size rows, in seq order per aggregate, across rounds."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, *["A", "A", "B", "A", "B"], aggregatetype=topic)
    relay = OutboxRelay(outbox, producer, batch_size=4)
    assert (relay.run_once(), relay.run_once(), relay.run_once()) == (4, 1, 0)
    assert by_key(consume_all(bootstrap, topic)) == {"A": [1, 2, 4], "B": [3, 5]}



def test_one_trace_from_request_through_relay_and_handler_to_the_next_relay(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """Request -> outbox -> relay -> handler -> outbox -> relay is one trace and one causal chain."""
    from choreoscope.instrumentation.consumer import traced_consumer
    from choreoscope.instrumentation.producer import instrument_producer

    url = f"sqlite:///{tmp_path / 'svc.db'}"
    orders = Outbox(url, service="order-service")
    payments = Outbox(url, table="payment_outbox", service="payment-service")
    orders.create_table()
    payments.create_table()
    traced = instrument_producer(producer, service="relay", tracer_provider=tracer_provider)
    with tracer_provider.get_tracer("test").start_as_current_span("POST /orders") as request:
        [placed] = commit_rows(orders, url, "ord_1", aggregatetype=f"{topic}.orders")
    assert OutboxRelay(orders, traced, tracer_provider=tracer_provider).run_once() == 1

    written: list[Event] = []

    @traced_consumer(service="payment-service", group="payments", tracer_provider=tracer_provider)
    def charge(event: Event) -> None:
        conn = dbapi_connect(url)
        written.append(add_order(payments, conn, event.subject, aggregatetype=f"{topic}.payments",
                                 event_type="payment.failed", data={"order_id": event.subject}))
        conn.commit()
        conn.close()

    [record] = consume_all(bootstrap, f"{topic}.orders")
    charge(record)
    assert OutboxRelay(payments, traced, tracer_provider=tracer_provider).run_once() == 1
    [failed_record] = consume_all(bootstrap, f"{topic}.payments")

    [failed] = written
    assert (failed.correlation_id, failed.causation_id) == (placed.id, placed.id)
    assert dict(failed_record.headers)["ce_causationid"] == placed.id.encode()
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    assert sorted(spans) == sorted([
        "POST /orders", f"send {topic}.orders", f"process {topic}.orders",
        f"send {topic}.payments"])
    chain = [spans["POST /orders"], spans[f"send {topic}.orders"],
             spans[f"process {topic}.orders"], spans[f"send {topic}.payments"]]
    assert {s.context.trace_id for s in chain} == {request.get_span_context().trace_id}
    assert [s.parent.span_id for s in chain[1:]] == [s.context.span_id for s in chain[:-1]]


# -- failures, backoff, dead rows ---------------------------------------------------------


def test_failing_row_backs_off_blocks_its_aggregate_then_dies(
    db_url: str, outbox: Outbox, producer: KafkaProducer, bootstrap: str, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """A failing row retries with doubling backoff, holds back its aggregate, and dies at max_attempts."""
    commit_rows(outbox, db_url, "X", aggregatetype=topic, topic=BAD_TOPIC)
    commit_rows(outbox, db_url, "X", "Y", aggregatetype=topic)
    relay = OutboxRelay(outbox, producer, max_attempts=3, backoff=60,
                        tracer_provider=tracer_provider)

    assert relay.run_once() == 1  # Y; X's second row waits for the first
    assert relay.run_once() == 0  # X1 is backing off: not even tried
    [x1, x2, y] = outbox_rows(outbox)
    assert (x1["status"], x1["attempts"], x1["next_attempt_at"] - x1["last_attempt_at"]) == (
        "pending", 1, 60_000)
    assert x1["last_error"].startswith('ValueError: Topic name "bad topic!" is illegal')
    assert [(x2["status"], x2["attempts"]), (y["status"], y["attempts"])] == [
        ("pending", 0), ("sent", 1)]

    make_stale(outbox, db_url)
    assert relay.run_once() == 0
    x1 = outbox_rows(outbox)[0]
    assert (x1["status"], x1["attempts"], x1["next_attempt_at"] - x1["last_attempt_at"]) == (
        "pending", 2, 120_000)

    make_stale(outbox, db_url)
    assert relay.run_once() == 1  # X1 dies, then X2 is free to go in the same pass
    [x1, x2, _] = outbox_rows(outbox)
    assert (x1["status"], x1["attempts"], x1["next_attempt_at"]) == ("dead", 3, None)
    assert (x2["status"], x2["attempts"]) == ("sent", 1)
    assert by_key(consume_all(bootstrap, topic)) == {"X": [x2["seq"]], "Y": [y["seq"]]}
    failed = [s for s in span_exporter.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    assert [(s.name, s.attributes[semconv.ERROR_TYPE]) for s in failed] == [
        (f"send {BAD_TOPIC}", "ValueError")] * 3
    assert all(s.events[0].name == "exception" for s in failed)


def test_an_aggregate_is_its_type_and_id(
    db_url: str, outbox: Outbox, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """A failing `customers/42` holds back only its own later rows: `orders/42`, the same id
    of another aggregate type, goes out."""
    commit_rows(outbox, db_url, "42", aggregatetype="customers", topic=BAD_TOPIC)
    commit_rows(outbox, db_url, "42", "43", aggregatetype=topic)
    relay = OutboxRelay(outbox, producer, backoff=60)
    assert relay.run_once() == 2
    assert [(r["aggregatetype"], r["aggregateid"], r["status"]) for r in outbox_rows(outbox)] == [
        ("customers", "42", "pending"), (topic, "42", "sent"), (topic, "43", "sent")]
    assert sorted(by_key(consume_all(bootstrap, topic))) == ["42", "43"]


def test_broker_side_failure_counts_as_an_attempt(
    tmp_path: Path, bootstrap: str, topic: str,
) -> None:
    """A record the producer refuses (too large) is a failed attempt of that row only."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "big", aggregatetype=topic, data={"blob": "x" * 5000})
    commit_rows(outbox, url, "small", aggregatetype=topic)
    small_producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=2000)
    try:
        relay = OutboxRelay(outbox, small_producer, max_attempts=1)
        assert relay.run_once() == 1
    finally:
        small_producer.close()
    [big, small] = outbox_rows(outbox)
    assert (big["status"], big["attempts"], small["status"]) == ("dead", 1, "sent")
    assert big["last_error"].startswith("MessageSizeTooLargeError")


def test_a_closed_producer_never_makes_a_row_dead(
    tmp_path: Path, bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """A producer closed under the relay (shutdown in the wrong order) is the relay's failure:
    past max_attempts the rows stay pending, said once in the log, and a relay with an open
    producer sends them."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "A", "B", aggregatetype=topic)
    closed = KafkaProducer(bootstrap_servers=bootstrap)
    closed.close()
    relay = OutboxRelay(outbox, closed, max_attempts=1)
    with caplog.at_level(logging.ERROR, logger="choreoscope.instrumentation.relay"):
        for _ in range(3):
            assert relay.run_once() == 0
            make_stale(outbox, url)
    assert [(status, attempts) for _, status, attempts in statuses(outbox)] == [
        ("pending", 3), ("pending", 3)]
    assert outbox_rows(outbox)[0]["last_error"].startswith("IllegalStateError: ")
    assert "KafkaProducer already closed" in outbox_rows(outbox)[0]["last_error"]
    logged = [r.getMessage() for r in caplog.records if "producer fails" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith(
        "outbox relay: its producer fails sends with IllegalStateError: ")
    assert logged[0].endswith("; rows stay pending until a producer that works sends them (a "
                              "closed producer, or one in a fatal state, never recovers: start "
                              "a new one)")
    open_producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        assert OutboxRelay(outbox, open_producer).run_once() == 2
    finally:
        open_producer.close()
    assert [status for _, status, _ in statuses(outbox)] == ["sent", "sent"]


def test_bad_rows_die_without_stopping_the_relay(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """Rows with unreadable headers or payload are recorded as failures; good rows still go out."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    conn = dbapi_connect(url)
    for n, (payload, headers) in enumerate([("{", "{}"), ("1", "[1]"), ("1", "not json")]):
        conn.execute(
            "insert into outbox (id, aggregatetype, aggregateid, type, payload, headers,"
            " tracingspancontext) values (?, ?, ?, 'order.placed', ?, ?, 'traceparent=bogus')",
            (f"id-{n}", topic, f"bad-{n}", payload, headers),
        )
    conn.commit()
    conn.close()
    commit_rows(outbox, url, "good", aggregatetype=topic)
    relay = OutboxRelay(outbox, producer, max_attempts=1)
    assert relay.run_once() == 1
    conn = dbapi_connect(url)
    rows = conn.execute("select aggregateid, status, last_error from outbox order by seq").fetchall()
    conn.close()
    assert [(agg, status, error.split(":")[0] if error else None) for agg, status, error in rows] == [
        ("bad-0", "dead", "JSONDecodeError"),
        ("bad-1", "dead", "ValueError"),
        ("bad-2", "dead", "JSONDecodeError"),
        ("good", "sent", None),
    ]
    assert rows[1][2] == "ValueError: expected headers to be a JSON object, got list"
    assert [r.key for r in consume_all(bootstrap, topic)] == [b"good"]


def test_user_inserted_row_gets_defaults_and_extra_headers(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """A hand-inserted row with only Debezium's columns is sent; unknown header keys pass through."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="billing")
    outbox.create_table()
    conn = dbapi_connect(url)
    conn.execute(
        "insert into outbox (id, aggregatetype, aggregateid, type, payload, headers)"
        " values ('0190a1b2-0000-7000-8000-000000000001', ?, 'inv_1', 'invoice.issued',"
        " '{\"n\": 1}', '{\"tenant\": \"acme\"}')",
        (topic,),
    )
    conn.commit()
    conn.close()
    assert OutboxRelay(outbox, producer).run_once() == 1
    [record] = consume_all(bootstrap, topic)
    headers = dict(record.headers)
    assert (headers["ce_source"], headers["ce_subject"], headers["ce_schemaversion"],
            headers["tenant"], record.value) == (b"billing", b"inv_1", b"1", b"acme", b'{"n":1}')
    assert "ce_time" not in headers  # nothing to say when the fact happened: left out


# -- at-least-once: a crash after the ack ------------------------------------------------


class _Crash(BaseException):
    """Stands for the relay process dying."""


class _CrashAfterAck:
    """A producer whose acks arrive, after which the process 'dies' before marking the row."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer

    def send(self, *args: Any, **kwargs: Any) -> Any:
        future = self._producer.send(*args, **kwargs)

        class Future:
            def get(self, timeout: float | None = None) -> Any:
                future.get(timeout=timeout)
                raise _Crash

        return Future()


def test_crash_between_ack_and_mark_resends_with_the_same_id(
    db_url: str, outbox: Outbox, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """A relay dying after the broker ack leaves the row pending; the next relay re-sends the same ce_id."""
    [event] = commit_rows(outbox, db_url, "ord_1", aggregatetype=topic)
    with pytest.raises(_Crash):
        OutboxRelay(outbox, _CrashAfterAck(producer)).run_once()
    [row] = outbox_rows(outbox)
    assert (row["status"], row["attempts"], row["last_attempt_at"]) == ("pending", 0, None)
    if db_url.startswith("sqlite"):
        assert row["next_attempt_at"] > row["created_at"]  # leased by the dead relay
        make_stale(outbox, db_url)  # ... until the lease expires
    assert OutboxRelay(outbox, producer).run_once() == 1
    assert statuses(outbox) == [("ord_1", "sent", 1)]
    records = consume_all(bootstrap, topic)
    assert [dict(r.headers)["ce_id"] for r in records] == [event.id.encode()] * 2


class _LeaseLost:
    """A producer whose send outlasts the relay's SQLite lease: meanwhile a second relay takes
    the row over and sends it; then this send fails."""

    def __init__(self, producer: KafkaProducer, outbox: Outbox, url: str) -> None:
        self._producer, self._outbox, self._url = producer, outbox, url

    def send(self, *args: Any, **kwargs: Any) -> Any:
        make_stale(self._outbox, self._url)  # the lease expired
        assert OutboxRelay(self._outbox, self._producer).run_once() == 1
        raise KafkaTimeoutError("no ack in time")


def test_a_relay_whose_lease_expired_leaves_the_row_to_the_relay_that_took_it(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """On SQLite, a relay's late failure never marks a row another relay sent after the first
    relay's lease expired (it went back to pending, and out again after its successors)."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    [event] = commit_rows(outbox, url, "ord_1", aggregatetype=topic)
    assert OutboxRelay(outbox, _LeaseLost(producer, outbox, url)).run_once() == 0
    [row] = outbox_rows(outbox)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 1, None)
    assert [dict(r.headers)["ce_id"] for r in consume_all(bootstrap, topic)] == [event.id.encode()]


# -- two relays on one PostgreSQL table ------------------------------------------------


class _Gate:
    """A producer that stops inside its first send until released."""

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30)
        return self._producer.send(*args, **kwargs)


def test_second_relay_skips_the_aggregate_the_first_holds(
    db_url: str, outbox: Outbox, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """While one relay is sending an aggregate's head row, writers go on and a second relay sends all but that aggregate."""
    commit_rows(outbox, db_url, "A", "B", "A", "B", "C", "A", aggregatetype=topic)
    gate = _Gate(producer)
    first = OutboxRelay(outbox, gate, batch_size=1)
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(first.run_once()))
    worker.start()
    try:
        assert gate.entered.wait(30)
        # The service's own write does not wait for the relay (no busy timeout at all).
        writer = (sqlite3.connect(db_url[len("sqlite:///"):], timeout=0)
                  if db_url.startswith("sqlite") else psycopg.connect(db_url))
        add_order(outbox, writer, "D", aggregatetype=topic)
        writer.commit()
        writer.close()
        second = OutboxRelay(outbox, producer)
        assert second.run_once() == 4  # B, B, C, D: A's rows wait behind the held A#1
        assert [s for s in statuses(outbox) if s[0] == "A"] == [("A", "pending", 0)] * 3
    finally:
        gate.release.set()
        worker.join(30)
    assert result == [1]
    assert second.run_once() == 2
    assert by_key(consume_all(bootstrap, topic)) == {
        "A": [1, 3, 6], "B": [2, 4], "C": [5], "D": [7]}


class _FlakyOnce:
    """A producer whose send fails once for each of the given records, whichever relay sends it."""

    _lock = threading.Lock()

    def __init__(self, producer: KafkaProducer, left: set[str]) -> None:
        self._producer = producer
        self._left = left  # "key#seq" of records to fail once, shared by the relays

    def send(self, topic: str, *, value: Any, key: bytes, headers: Any) -> Any:
        with self._lock:
            seq = dict(headers)["ce_sequence"].decode()
            if f"{key.decode()}#{seq}" in self._left:
                self._left.discard(f"{key.decode()}#{seq}")
                raise KafkaError("injected transient failure")
        return self._producer.send(topic, value=value, key=key, headers=headers)


def test_two_relays_keep_seq_order_per_aggregate(
    db_url: str, outbox: Outbox, bootstrap: str, topic: str,
) -> None:
    """Two relays running at once on one table deliver each aggregate in seq order, around failing rows."""
    aggregates = ["A", "B", "C", "D"]
    conn = dbapi_connect(db_url)
    seqs: dict[str, list[int]] = defaultdict(list)
    for n in range(6):
        for agg in aggregates:
            poison = agg == "B" and n == 2
            event = add_order(outbox, conn, agg, aggregatetype=topic,
                              topic=BAD_TOPIC if poison else None)
            if not poison:
                seqs[agg].append(event.sequence)
    conn.commit()
    conn.close()
    flaky = {f"C#{seqs['C'][1]}", f"D#{seqs['D'][4]}"}

    stop = threading.Event()
    producers = [KafkaProducer(bootstrap_servers=bootstrap) for _ in range(2)]
    wrapped = [_FlakyOnce(p, flaky) for p in producers]
    relays = [OutboxRelay(outbox, w, batch_size=3, backoff=0, max_attempts=2) for w in wrapped]
    threads = [threading.Thread(target=r.run_forever, args=(stop, 0.01)) for r in relays]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while any(s == "pending" for _, s, _ in statuses(outbox)):
            assert time.monotonic() < deadline, statuses(outbox)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for p in producers:
            p.close()
    assert by_key(consume_all(bootstrap, topic)) == dict(seqs)
    rows = {r["seq"]: r for r in outbox_rows(outbox)}
    dead = [(r["aggregateid"], r["attempts"]) for r in rows.values() if r["status"] == "dead"]
    assert dead == [("B", 2)]
    retried = sorted((r["aggregateid"], r["attempts"]) for r in rows.values()
                     if r["status"] == "sent" and r["attempts"] > 1)
    assert retried == [("C", 2), ("D", 2)]


# -- running and configuration ------------------------------------------------------------


def test_run_forever_publishes_until_stopped(
    tmp_path: Path, producer: KafkaProducer, bootstrap: str, topic: str,
) -> None:
    """run_forever keeps publishing new rows and returns once its stop event is set."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    stop = threading.Event()
    relay = OutboxRelay(outbox, producer)
    worker = threading.Thread(target=relay.run_forever, args=(stop, 0.02))
    worker.start()
    try:
        commit_rows(outbox, url, "ord_1", "ord_2", aggregatetype=topic)
        deadline = time.monotonic() + 30
        while [s for _, s, _ in statuses(outbox)] != ["sent", "sent"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert sorted(r.key for r in consume_all(bootstrap, topic)) == [b"ord_1", b"ord_2"]


def test_run_forever_survives_a_missing_table(
    tmp_path: Path, producer: KafkaProducer, caplog: pytest.LogCaptureFixture,
) -> None:
    """A pass that fails on the database is logged and retried, not fatal; run_once raises it."""
    outbox = Outbox(f"sqlite:///{tmp_path / 'svc.db'}", service="s")
    relay = OutboxRelay(outbox, producer)
    with pytest.raises(sqlite3.OperationalError, match="no such table: outbox"):
        relay.run_once()
    stop = threading.Event()
    worker = threading.Thread(target=relay.run_forever, args=(stop, 0.01))
    worker.start()
    deadline = time.monotonic() + 30
    while not any("outbox relay pass failed" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    stop.set()
    worker.join(30)
    assert not worker.is_alive()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "expected max_attempts to be a positive integer, got 0"),
        ({"batch_size": "10"}, ValueError, "expected batch_size to be a positive integer, got '10'"),
        ({"backoff": -1}, ValueError, "expected backoff to be seconds (a number >= 0) or a "
                                      "callable attempts -> seconds, got -1"),
        ({"send_timeout": 0}, ValueError, "expected send_timeout to be seconds > 0, got 0"),
        ({"topic_for": "orders"}, TypeError, "expected topic_for to be a callable, got 'orders'"),
        ({"producer": object()}, TypeError, "expected a kafka.KafkaProducer, got object"),
        ({"outbox": "sqlite:///x.db"}, TypeError, "expected an Outbox, got str"),
    ],
)
def test_bad_relay_configuration_is_rejected(
    tmp_path: Path, producer: KafkaProducer, kwargs: dict[str, Any], error: type[Exception],
    message: str,
) -> None:
    """Wrong relay arguments fail at construction with what was expected."""
    args: dict[str, Any] = {
        "outbox": Outbox(f"sqlite:///{tmp_path / 'svc.db'}", service="s"), "producer": producer,
    }
    args.update(kwargs)
    with pytest.raises(error) as info:
        OutboxRelay(args.pop("outbox"), args.pop("producer"), **args)
    assert str(info.value) == message


# -- the bus away ----------------------------------------------------------------------------


def _unreachable_producer(**config: Any) -> KafkaProducer:
    """A real producer whose broker is not there: every send to a topic it has no metadata
    for blocks `max_block_ms`, then fails with KafkaTimeoutError."""
    from choreoscope.collector.broker import free_port

    return KafkaProducer(bootstrap_servers=f"127.0.0.1:{free_port()}", api_version=(2, 5, 0),
                         **config)


def test_with_the_bus_away_a_round_tries_one_send_not_one_per_aggregate(
    outbox: Outbox, db_url: str, topic: str,
) -> None:
    """Each send blocks for metadata while the broker is away. A round holding the heads of
    five aggregates used to block five times over (on PostgreSQL with its row locks held):
    no send starts once the round's `send_timeout` is over, and the rows not tried stay as
    they were, due at once, no attempt counted."""
    commit_rows(outbox, db_url, *[f"ord_{i}" for i in range(5)], aggregatetype=topic)
    away = _unreachable_producer(max_block_ms=1500)
    relay = OutboxRelay(outbox, away, send_timeout=1.0)
    try:
        assert relay.run_once() == 0
    finally:
        relay.close()
        away.close(timeout=1)
    rows = outbox_rows(outbox)
    assert [(r["status"], r["attempts"]) for r in rows] == (
        [("pending", 1)] + [("pending", 0)] * 4)
    assert rows[0]["last_error"].startswith("KafkaTimeoutError")
    assert [r["next_attempt_at"] is None for r in rows] == [False] + [True] * 4


def test_run_forever_stops_between_sends_with_the_bus_away(
    tmp_path: Path, topic: str,
) -> None:
    """Stopped while a send blocks for metadata, the relay starts no other send: it returns
    after that one, its rows left pending."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, *[f"ord_{i}" for i in range(4)], aggregatetype=topic)
    away = _unreachable_producer(max_block_ms=1500)
    relay = OutboxRelay(outbox, away, send_timeout=30)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run_forever, args=(stop, 0.05))
    worker.start()
    try:
        time.sleep(0.5)  # the first send is blocked
        stop.set()
        worker.join(30)
    finally:
        away.close(timeout=1)
    assert not worker.is_alive()
    assert [a for _, _, a in statuses(outbox)] == [1, 0, 0, 0]


def test_a_value_its_serializer_makes_not_json_gets_its_content_type(
    tmp_path: Path, bootstrap: str, topic: str,
) -> None:
    """As with `publish`: a producer whose serializer makes text (or bytes) that are not JSON
    sends the row with the `content-type` that says so, so consumers do not read it as JSON."""
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "ord_1", aggregatetype=topic)
    raw = KafkaProducer(bootstrap_servers=bootstrap,
                        value_serializer=lambda v: f"order {v['order_id']}".encode())
    try:
        assert OutboxRelay(outbox, raw).run_once() == 1
    finally:
        raw.close(timeout=5)
    [record] = consume_all(bootstrap, topic)
    assert record.value == b"order ord_1"
    assert dict(record.headers)["content-type"] == b"text/plain; charset=utf-8"
    event = decode_record(record.headers, record.value)
    assert (event.data, event.problems) == ("order ord_1", [])


def test_the_relay_spans_go_to_the_traced_producers_provider(
    tmp_path: Path, producer: KafkaProducer, topic: str,
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter,
) -> None:
    """Given a TracedProducer made with its own provider (several services in one process,
    none global), the relay's send spans go there too."""
    from choreoscope.instrumentation import instrument_producer

    url = f"sqlite:///{tmp_path / 'svc.db'}"
    outbox = Outbox(url, service="s")
    outbox.create_table()
    commit_rows(outbox, url, "ord_1", aggregatetype=topic)
    traced = instrument_producer(producer, service="s", tracer_provider=tracer_provider)
    relay = OutboxRelay(outbox, traced)
    assert relay.run_once() == 1
    relay.close()
    assert [(s.name, s.kind) for s in span_exporter.get_finished_spans()] == [
        (f"send {topic}", SpanKind.PRODUCER)]
