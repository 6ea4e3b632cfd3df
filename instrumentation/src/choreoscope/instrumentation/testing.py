"""Test doubles for code instrumented with Choreoscope: spans captured in memory.

    from choreoscope.instrumentation.testing import capture_spans

    provider, exporter = capture_spans()
    producer = instrument_producer(kafka_producer, service="orders", tracer_provider=provider)
    producer.publish("orders", "order.placed", {"id": 1})
    producer.flush()                      # the span ends when the broker acknowledges
    [span] = exporter.get_finished_spans()

With pytest, import the fixture into a conftest.py:

    from choreoscope.instrumentation.testing import captured_spans  # noqa: F401

    def test_publish(captured_spans):
        provider, exporter = captured_spans
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["CapturedSpans", "capture_spans", "captured_spans", "wait_for_spans"]


class CapturedSpans(NamedTuple):
    """A provider (not installed globally) and the exporter receiving its finished spans."""

    provider: TracerProvider
    exporter: InMemorySpanExporter


def capture_spans() -> CapturedSpans:
    """A new provider exporting each finished span synchronously to an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return CapturedSpans(provider, exporter)


def wait_for_spans(
    exporter: InMemorySpanExporter, count: int, timeout: float = 10.0
) -> tuple[ReadableSpan, ...]:
    """The finished spans once there are at least `count` (or all there are after `timeout` s).

    Producer spans end on kafka-python's I/O thread when the broker answers; `flush()` waits
    for that, a future's `get()` may return a moment before.
    """
    deadline = time.monotonic() + timeout
    spans = exporter.get_finished_spans()
    while len(spans) < count and time.monotonic() < deadline:
        time.sleep(0.01)
        spans = exporter.get_finished_spans()
    return spans


def _fixture() -> Iterator[CapturedSpans]:
    """A `CapturedSpans` for one test; the provider is shut down after."""
    captured = capture_spans()
    yield captured
    captured.provider.shutdown()


captured_spans: Any
try:
    import pytest
except ImportError:  # pytest is optional: the helpers above work without it
    captured_spans = None
else:
    captured_spans = pytest.fixture(_fixture, name="captured_spans")
