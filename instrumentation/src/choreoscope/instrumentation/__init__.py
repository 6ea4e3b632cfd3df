"""Choreoscope instrumentation: wrap kafka-python producers and consumers.

Every event gets CloudEvents headers (id, type, source, correlation and causation ids) and an
OpenTelemetry span whose context travels in the W3C `traceparent` header. The transactional
outbox writes events inside the service's own database transaction; the relay publishes them.

`setup_tracing` (and `dropped_spans`) load the OTLP exporter on first use only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._publishing import traced_producer
from .consumer import traced_consumer
from .context import carry_context, current_event
from .errors import ChoreoscopeError, UsageError
from .event import Event
from .outbox import Outbox
from .producer import TracedProducer, instrument_producer
from .relay import OutboxRelay

if TYPE_CHECKING:
    from .tracing import dropped_spans, setup_tracing

__all__ = [
    "ChoreoscopeError",
    "Event",
    "Outbox",
    "OutboxRelay",
    "TracedProducer",
    "UsageError",
    "carry_context",
    "current_event",
    "dropped_spans",
    "instrument_producer",
    "setup_tracing",
    "traced_consumer",
    "traced_producer",
]

_LAZY = frozenset({"dropped_spans", "setup_tracing"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import tracing

        return getattr(tracing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
