"""SpanSink stores spans once per (trace_id, span_id), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans as spans_table
from choreoscope.collector.traces.otlp import decode_json
from choreoscope.collector.traces.sink import SpanSink
from tests.collector.traces.jaeger_server import fixture


def _check_idempotent(store: Store) -> None:
    spans = decode_json(json.loads(fixture("otel_traces_01.json"))).spans
    dup = decode_json(json.loads(fixture("otlp2jaeger-in.json"))).spans  # the same span twice
    sink = SpanSink(store)
    assert sink.export(spans + dup, origin="otlp", received_at_ms=1000) == 5
    assert sink.export(spans, origin="jaeger", received_at_ms=2000) == 0
    with store.engine.connect() as conn:
        rows = conn.execute(select(spans_table.c.span_id, spans_table.c.kind,
                                   spans_table.c.origin, spans_table.c.received_at_ms)
                            .order_by(spans_table.c.trace_id, spans_table.c.span_id)).all()
    assert [tuple(r) for r in rows] == [
        ("0000000000000002", "server", "otlp", 1000),
        ("0000000000000004", "producer", "otlp", 1000),
        ("0000000000000003", "client", "otlp", 1000),
        ("0000000000000005", "consumer", "otlp", 1000),
        ("e127af99e3b3e074", "server", "otlp", 1000),
    ]


def test_sink_is_idempotent_on_sqlite(tmp_path: Path) -> None:
    """Re-storing the same spans (even from another origin) adds nothing on SQLite."""
    _check_idempotent(Store(f"sqlite:///{tmp_path}/s.db").create())


@pytest.mark.postgres
def test_sink_is_idempotent_on_postgres(postgres_url: str) -> None:
    """Re-storing the same spans adds nothing on PostgreSQL."""
    store = Store(postgres_url).create()
    try:
        _check_idempotent(store)
    finally:
        store.dispose()


def test_sink_rejects_unknown_origin(tmp_path: Path) -> None:
    """The origin column only takes the two trace sources."""
    with pytest.raises(ValueError, match="expected a span origin in"):
        SpanSink(Store(f"sqlite:///{tmp_path}/s.db").create()).export([], origin="zipkin")


@pytest.mark.postgres
def test_hostile_values_are_stored_on_postgres(postgres_url: str) -> None:
    """NUL characters, overlong names and out-of-range partitions are stored, not refused."""
    from choreoscope.collector.traces.model import Span

    span = Span(trace_id="ab" * 16, span_id="cd" * 8, name="process \x00" + "x" * 300,
                service="svc\x00", kind="consumer",
                attributes={"messaging.destination.partition.id": str(2**40),
                            "messaging.kafka.offset": 2**70, "messaging.message.id": "e\x001"})
    store = Store(postgres_url).create()
    try:
        assert SpanSink(store).export([span], origin="otlp", received_at_ms=1) == 1
        with store.engine.connect() as conn:
            row = conn.execute(select(spans_table)).one()._mapping
    finally:
        store.dispose()
    assert (row["name"][:9], len(row["name"]), row["service"], row["message_id"]) == (
        "process \ufffd", 255, "svc\ufffd", "e\ufffd1")
    assert (row["partition"], row["offset"]) == (None, None)
    assert json.loads(row["attributes"])["messaging.kafka.offset"] == 2**70
