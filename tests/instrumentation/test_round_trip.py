"""Three hops on the embedded broker: orders publishes, payments and shipping handle and publish.

One trace across the hops, the correlation/causation chain in the headers, and span names,
kinds, attributes and parents exactly as DESIGN.md section 3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from kafka import KafkaProducer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from choreoscope.instrumentation import (
    Event,
    carry_context,
    current_event,
    instrument_producer,
    traced_consumer,
)
from choreoscope.instrumentation.traceparent import format_traceparent
from tests.instrumentation._bus import consume

pytestmark = pytest.mark.broker


@pytest.fixture
def providers(span_exporter: InMemorySpanExporter) -> Iterator[dict[str, TracerProvider]]:
    """One provider per service (resource service.name), all exporting to one exporter."""
    made = {}
    for service in ("orders", "payments", "shipping"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        made[service] = provider
    yield made
    for provider in made.values():
        provider.shutdown()


def wait_for_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """The finished spans once `count` have ended (send spans end in the producer's thread)."""
    deadline = time.monotonic() + 10
    while len(exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(exporter.get_finished_spans())


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers)


def test_three_hops(
    bootstrap: str,
    topic: str,
    providers: dict[str, TracerProvider],
    span_exporter: InMemorySpanExporter,
) -> None:
    """orders -> payments -> shipping keeps one trace, one correlation id and the causation chain."""
    t_orders, t_payments, t_shipping = f"{topic}.orders", f"{topic}.payments", f"{topic}.shipping"
    kafka = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        orders = instrument_producer(kafka, service="orders", tracer_provider=providers["orders"])
        payments = instrument_producer(
            kafka, service="payments", tracer_provider=providers["payments"]
        )
        shipping = instrument_producer(
            kafka, service="shipping", tracer_provider=providers["shipping"]
        )
        published: dict[str, Event] = {}

        @traced_consumer(
            service="payments", group="payments", tracer_provider=providers["payments"]
        )
        def on_order_placed(event: Event) -> None:
            published["payment"] = payments.publish(
                t_payments, "payment.captured", {"order": event.data["order"]}, key="ord_1"
            )

        @traced_consumer(
            service="shipping", group="shipping", tracer_provider=providers["shipping"]
        )
        def on_payment_captured(event: Event) -> None:
            published["shipment"] = shipping.publish(
                t_shipping, "shipment.scheduled", {"order": event.data["order"]}, key="ord_1"
            )

        published["order"] = orders.publish(t_orders, "order.placed", {"order": 1}, key="ord_1")
        kafka.flush(10)
        (r_order,) = consume(bootstrap, t_orders, 1)
        on_order_placed(r_order)
        kafka.flush(10)
        (r_payment,) = consume(bootstrap, t_payments, 1)
        on_payment_captured(r_payment)
        kafka.flush(10)
        (r_shipment,) = consume(bootstrap, t_shipping, 1)
    finally:
        kafka.close()

    order, payment, shipment = published["order"], published["payment"], published["shipment"]
    # The correlation/causation chain.
    assert order.correlation_id == order.id and order.causation_id is None
    assert (payment.correlation_id, payment.causation_id) == (order.id, order.id)
    assert (shipment.correlation_id, shipment.causation_id) == (order.id, payment.id)
    assert len({order.id, payment.id, shipment.id}) == 3

    spans = wait_for_spans(span_exporter, 5)
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == sorted(
        [
            f"send {t_orders}",
            f"process {t_orders}",
            f"send {t_payments}",
            f"process {t_payments}",
            f"send {t_shipping}",
        ]
    )
    send_o, proc_o = by_name[f"send {t_orders}"], by_name[f"process {t_orders}"]
    send_p, proc_p = by_name[f"send {t_payments}"], by_name[f"process {t_payments}"]
    send_s = by_name[f"send {t_shipping}"]

    # One trace, parent/child along the hops, kinds and services.
    assert {s.context.trace_id for s in spans} == {send_o.context.trace_id}
    assert send_o.parent is None
    chain = [send_o, proc_o, send_p, proc_p, send_s]
    for parent, child in pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert [s.kind for s in chain] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
    ]
    assert [s.resource.attributes["service.name"] for s in chain] == [
        "orders",
        "payments",
        "payments",
        "shipping",
        "shipping",
    ]

    # Headers on the bus.
    for record, event, send in (
        (r_order, order, send_o),
        (r_payment, payment, send_p),
        (r_shipment, shipment, send_s),
    ):
        headers = headers_of(record)
        expected = {
            "ce_specversion": b"1.0",
            "ce_id": event.id.encode(),
            "ce_type": event.type.encode(),
            "ce_source": event.source.encode(),
            "ce_time": event.time.encode(),
            "ce_subject": b"ord_1",
            "ce_schemaversion": b"1",
            "ce_correlationid": order.id.encode(),
            "traceparent": format_traceparent(
                send.context.trace_id, send.context.span_id, send.context.trace_flags
            ).encode(),
        }
        if event.causation_id:
            expected["ce_causationid"] = event.causation_id.encode()
        assert headers == expected
        assert record.key == b"ord_1"

    # Span attributes.
    def send_attrs(t: str, event: Event, record: Any) -> dict[str, Any]:
        attrs = {
            "messaging.system": "kafka",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": t,
            "messaging.kafka.message.key": "ord_1",
            "messaging.message.id": event.id,
            "messaging.message.conversation_id": order.id,
            "cloudevents.event_id": event.id,
            "cloudevents.event_type": event.type,
            "cloudevents.event_source": event.source,
            "cloudevents.event_subject": "ord_1",
            # from the broker's answer: where the record went
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        }
        if event.causation_id:
            attrs["choreoscope.causation_id"] = event.causation_id
        return attrs

    def process_attrs(t: str, event: Event, group: str, record: Any) -> dict[str, Any]:
        attrs = send_attrs(t, event, record)
        attrs.update(
            {
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": group,
                "choreoscope.service": group,  # each service consumes in a group of its name
            }
        )
        return attrs

    assert dict(send_o.attributes or {}) == send_attrs(t_orders, order, r_order)
    assert dict(send_p.attributes or {}) == send_attrs(t_payments, payment, r_payment)
    assert dict(send_s.attributes or {}) == send_attrs(t_shipping, shipment, r_shipment)
    assert dict(proc_o.attributes or {}) == process_attrs(t_orders, order, "payments", r_order)
    assert dict(proc_p.attributes or {}) == process_attrs(
        t_payments, payment, "shipping", r_payment
    )


def test_thread_inside_handler_keeps_chain(
    bootstrap: str,
    topic: str,
    providers: dict[str, TracerProvider],
    span_exporter: InMemorySpanExporter,
) -> None:
    """A publish from a carry_context thread inside a handler continues the correlation and trace."""
    import threading

    kafka = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        orders = instrument_producer(kafka, service="orders", tracer_provider=providers["orders"])
        payments = instrument_producer(
            kafka, service="payments", tracer_provider=providers["payments"]
        )
        out: list[Event] = []
        seen: list[Any] = []

        def later() -> None:
            seen.append(current_event())
            out.append(payments.publish(f"{topic}.b", "receipt.sent", {}, key="ord_1"))

        @traced_consumer(service="payments", tracer_provider=providers["payments"])
        def handle(event: Event) -> None:
            thread = threading.Thread(target=carry_context(later))
            thread.start()
            thread.join()

        order = orders.publish(f"{topic}.a", "order.placed", {}, key="ord_1")
        kafka.flush(10)
        (record,) = consume(bootstrap, f"{topic}.a", 1)
        handle(record)
        kafka.flush(10)
    finally:
        kafka.close()
    (receipt,) = out
    assert seen[0] is not None and seen[0].id == order.id
    assert (receipt.correlation_id, receipt.causation_id) == (order.id, order.id)
    spans = {s.name: s for s in wait_for_spans(span_exporter, 3)}
    process, send = spans[f"process {topic}.a"], spans[f"send {topic}.b"]
    assert send.parent is not None and send.parent.span_id == process.context.span_id
    assert send.context.trace_id == spans[f"send {topic}.a"].context.trace_id
