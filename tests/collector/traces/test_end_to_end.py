"""Instrumented services on the real broker export their spans to the receiver, into the store."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans
from choreoscope.collector.traces.receiver import OtlpReceiver
from choreoscope.instrumentation import instrument_producer, setup_tracing, traced_consumer


def _read(bootstrap: str, topic: str, count: int) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        records: list = []
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.mark.broker
def test_instrumented_spans_reach_the_store(bootstrap: str, topic: str, tmp_path: Path) -> None:
    """Producer and consumer spans of two events arrive linked, with messaging columns and the failure."""
    store = Store(f"sqlite:///{tmp_path}/e2e.db").create()
    receiver = OtlpReceiver(store, port=0).start()
    base = f"http://127.0.0.1:{receiver.port}"
    shop = setup_tracing("shop", endpoint=base, set_global=False)
    billing = setup_tracing("billing", endpoint=base, set_global=False)
    kafka_producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer = instrument_producer(kafka_producer, service="shop", tracer_provider=shop)
        ok = producer.publish(topic, "order.placed", {"n": 1}, key="ord_1", subject="ord_1")
        bad = producer.publish(topic, "order.placed", {"fail": True}, key="ord_2",
                               subject="ord_2")
        kafka_producer.flush()

        @traced_consumer(service="billing", group="billing", tracer_provider=billing)
        def handle(event):  # type: ignore[no-untyped-def]
            if event.data.get("fail"):
                raise ValueError("card declined")

        where = {}
        for record in _read(bootstrap, topic, 2):
            where[dict(record.headers)["ce_id"].decode()] = (record.partition, record.offset)
            with contextlib.suppress(ValueError):
                handle(record)
        assert shop.force_flush() and billing.force_flush()
        assert receiver.flush()
    finally:
        kafka_producer.close()
        shop.shutdown()
        billing.shutdown()
        receiver.stop()
    with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(spans))]
    by = {(r["kind"], r["message_id"]): r for r in rows}
    assert sorted(by) == sorted([("producer", ok.id), ("producer", bad.id),
                                 ("consumer", ok.id), ("consumer", bad.id)])
    for event, status, error_type in ((ok, "unset", None), (bad, "error", "ValueError")):
        partition, offset = where[event.id]
        send, process = by[("producer", event.id)], by[("consumer", event.id)]
        assert (send["name"], send["service"], send["destination"]) == (
            f"send {topic}", "shop", topic)
        assert process["trace_id"] == send["trace_id"]
        assert process["parent_span_id"] == send["span_id"]
        assert {k: process[k] for k in ("name", "service", "consumer_group", "destination",
                                        "partition", "offset", "status", "error_type",
                                        "conversation_id", "origin")} == {
            "name": f"process {topic}", "service": "billing", "consumer_group": "billing",
            "destination": topic, "partition": partition, "offset": offset, "status": status,
            "error_type": error_type, "conversation_id": event.correlation_id,
            "origin": "otlp"}
