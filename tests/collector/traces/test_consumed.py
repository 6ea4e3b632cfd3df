"""Consumer spans that name no event (OpenTelemetry's own Kafka instrumentation) are credited
with the event whose producer span is their parent, whichever of the two is stored first."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from choreoscope.collector.analyze import analyze
from choreoscope.collector.query.graph import graph
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans as spans_table
from choreoscope.collector.traces.model import Span
from choreoscope.collector.traces.sink import SpanSink
from tests.collector.reconstruct.factory import T0, ev, put


def _receive_span(event: dict, span_id: str, *, parent: str | None = None) -> Span:
    """What OpenTelemetry's kafka-python instrumentation exports for a record it iterates:
    `{topic} receive`, CONSUMER, the producer's context as parent, no message id, no group."""
    return Span(trace_id=event["trace_id"], span_id=span_id, name=f"{event['topic']} receive",
                kind="consumer", parent_span_id=parent or event["span_id"], service="shipping",
                start_us=(T0 + 40) * 1000, duration_us=50,
                attributes={"messaging.system": "kafka", "messaging.destination": event["topic"],
                            "messaging.kafka.partition": 0})


def _message_ids(store: Store) -> dict[str, str | None]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(spans_table.c.span_id, spans_table.c.message_id)).all())


def _check(store: Store) -> None:
    placed = ev("e1", "order.placed", flow="f1", ts=T0)
    paid = ev("e2", "payment.captured", flow="f1", cause="e1", offset=1, ts=T0 + 10)
    put(store, [placed])
    sink = SpanSink(store)
    sink.export([_receive_span(placed, "00000000000000a1"),
                 _receive_span(paid, "00000000000000a2"),
                 _receive_span(placed, "00000000000000a3", parent="00000000000000ff")],
                origin="otlp", received_at_ms=T0 + 50)
    # the event already stored names its span at once; the other waits for its event
    assert _message_ids(store) == {"00000000000000a1": "e1", "00000000000000a2": None,
                                   "00000000000000a3": None}
    put(store, [paid])
    analyze(store, now_ms=T0 + 60)
    # named by the pass; a span whose parent produced no stored event stays unnamed
    assert _message_ids(store) == {"00000000000000a1": "e1", "00000000000000a2": "e2",
                                   "00000000000000a3": None}
    edges = {(e["source"], e["target"], e["kind"]) for e in graph(store)["edges"]}
    assert {("order.placed", "shipping", "consumed_by"),
            ("payment.captured", "shipping", "consumed_by")} <= edges


def test_receive_spans_are_credited_on_sqlite(tmp_path: Path) -> None:
    _check(Store(f"sqlite:///{tmp_path}/s.db").create())


@pytest.mark.postgres
def test_receive_spans_are_credited_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url).create()
    try:
        _check(store)
    finally:
        store.dispose()


def test_a_span_received_long_before_its_event_is_left_unnamed(tmp_path: Path) -> None:
    """The pass looks an hour back (a record reaches the bus before it is consumed): older
    unnamed spans are not read again on every pass."""
    store = Store(f"sqlite:///{tmp_path}/s.db").create()
    placed = ev("e1", "order.placed", flow="f1", ts=T0)
    SpanSink(store).export([_receive_span(placed, "00000000000000a1")], origin="otlp",
                           received_at_ms=T0)
    put(store, [placed])
    analyze(store, now_ms=T0 + 3_600_001)
    assert _message_ids(store) == {"00000000000000a1": None}
