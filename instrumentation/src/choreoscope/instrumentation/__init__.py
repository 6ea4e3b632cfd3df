"""Choreoscope instrumentation: wrap kafka-python producers and consumers.

Every event gets CloudEvents headers (id, type, source, correlation and causation ids) and an
OpenTelemetry span whose context travels in the W3C `traceparent` header.
"""

from .context import carry_context, current_event
from .event import Event
from .outbox import Outbox
from .relay import OutboxRelay

__all__ = ["Event", "Outbox", "OutboxRelay", "carry_context", "current_event"]
