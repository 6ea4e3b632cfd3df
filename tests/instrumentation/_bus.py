"""Test helpers: put records on the embedded broker with plain clients and read them back."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331


def ce_headers(**fields: str) -> list[tuple[str, bytes]]:
    """Hand-written binary-mode headers: `ce_<name>=value`, plus `traceparent` if given."""
    out = []
    for name, value in fields.items():
        header = name if name in ("traceparent", "tracestate") else f"ce_{name}"
        out.append((header, value.encode()))
    return out


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, Any]],
    key: bytes | None = None,
) -> None:
    """Send `(value, headers)` pairs with a bare kafka-python producer, in order, to partition 0."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for value, headers in records:
            producer.send(topic, value=value, key=key, headers=headers or [], partition=0).get(10)
    finally:
        producer.close()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """Read `count` records of every partition (no group: assigned, from the beginning).

    Records come in (partition, offset) order.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.1)
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions or {0})])
        consumer.seek_to_beginning()
        records: list[Any] = []
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))[:count]
    finally:
        consumer.close()


def round_trip(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, Any]],
    key: bytes | None = None,
) -> list[Any]:
    """Produce `records` and read them back as kafka-python ConsumerRecords."""
    produce(bootstrap, topic, records, key=key)
    got = consume(bootstrap, topic, len(records))
    assert len(got) == len(records), f"expected {len(records)} records, got {len(got)}"
    return got


class CountingProducer(KafkaProducer):
    """A real producer that counts the records it is asked to send, per key."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.sends: Counter[bytes] = Counter()

    def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        self.sends[kwargs.get("key")] += 1
        return super().send(topic, *args, **kwargs)
