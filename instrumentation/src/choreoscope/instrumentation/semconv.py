"""Span names and attributes (DESIGN.md section 3): OpenTelemetry messaging conventions.

One place builds the attribute sets, so the producer, the consumer and the outbox relay
write exactly the same keys.
"""

from __future__ import annotations

from typing import Any

from .event import Event

# OpenTelemetry messaging semantic conventions (current names).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_DESTINATION_PARTITION_ID = "messaging.destination.partition.id"
MESSAGING_KAFKA_MESSAGE_KEY = "messaging.kafka.message.key"
MESSAGING_KAFKA_OFFSET = "messaging.kafka.offset"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CONVERSATION_ID = "messaging.message.conversation_id"
MESSAGING_CONSUMER_GROUP_NAME = "messaging.consumer.group.name"
ERROR_TYPE = "error.type"

# CloudEvents semantic conventions.
CLOUDEVENTS_EVENT_ID = "cloudevents.event_id"
CLOUDEVENTS_EVENT_TYPE = "cloudevents.event_type"
CLOUDEVENTS_EVENT_SOURCE = "cloudevents.event_source"
CLOUDEVENTS_EVENT_SUBJECT = "cloudevents.event_subject"

# Choreoscope's own.
CAUSATION_ID = "choreoscope.causation_id"
OUT_OF_ORDER = "choreoscope.out_of_order"
OUT_OF_ORDER_EVENT = "choreoscope.out_of_order"
ENVELOPE_PROBLEMS = "choreoscope.envelope.problems"
OUTBOX_DELAY_MS = "choreoscope.outbox.delay_ms"
# The consuming service `traced_consumer(service=...)` names: the collector credits the
# processing to it rather than to the tracer provider's `service.name` when the two differ.
SERVICE = "choreoscope.service"

KAFKA = "kafka"


def send_span_name(topic: str) -> str:
    return f"send {topic}"


def process_span_name(topic: str) -> str:
    return f"process {topic}"


def event_attributes(event: Event, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attributes every span about `event` carries (values that are None are left out),
    added to `into` when given (the hot paths fill one dict) and returned."""
    attrs: dict[str, Any] = {} if into is None else into
    if event.id:
        attrs[MESSAGING_MESSAGE_ID] = event.id
        attrs[CLOUDEVENTS_EVENT_ID] = event.id
    if event.correlation_id:
        attrs[MESSAGING_CONVERSATION_ID] = event.correlation_id
    if event.type:
        attrs[CLOUDEVENTS_EVENT_TYPE] = event.type
    if event.source:
        attrs[CLOUDEVENTS_EVENT_SOURCE] = event.source
    if event.subject:
        attrs[CLOUDEVENTS_EVENT_SUBJECT] = event.subject
    if event.causation_id:
        attrs[CAUSATION_ID] = event.causation_id
    return attrs


def send_attributes(topic: str, event: Event, key: str | None) -> dict[str, str]:
    """Attributes of the `send {topic}` PRODUCER span."""
    attrs = {
        MESSAGING_SYSTEM: KAFKA,
        MESSAGING_OPERATION_NAME: "send",
        MESSAGING_OPERATION_TYPE: "send",
        MESSAGING_DESTINATION_NAME: topic,
    }
    if key is not None:
        attrs[MESSAGING_KAFKA_MESSAGE_KEY] = key
    event_attributes(event, attrs)
    return attrs


def process_attributes(event: Event, group: str | None,
                       service: str | None = None) -> dict[str, str | int]:
    """Attributes of the `process {topic}` CONSUMER span of `service`'s handler."""
    attrs: dict[str, str | int] = {
        MESSAGING_SYSTEM: KAFKA,
        MESSAGING_OPERATION_NAME: "process",
        MESSAGING_OPERATION_TYPE: "process",
        MESSAGING_DESTINATION_NAME: event.topic or "",
    }
    if group:
        attrs[MESSAGING_CONSUMER_GROUP_NAME] = group
    if service:
        attrs[SERVICE] = service
    if event.partition is not None:
        attrs[MESSAGING_DESTINATION_PARTITION_ID] = str(event.partition)
    if event.offset is not None:
        attrs[MESSAGING_KAFKA_OFFSET] = event.offset
    if event.key is not None:
        attrs[MESSAGING_KAFKA_MESSAGE_KEY] = event.key.decode("utf-8", "replace")
    event_attributes(event, attrs)
    return attrs
