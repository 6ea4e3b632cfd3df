"""Trace sources: Jaeger (fetched by the trace ids seen on the bus) and the OTLP/HTTP receiver.

Both normalise spans into `Span` and write them to the `spans` table through `SpanSink`,
idempotently by (trace_id, span_id). Names load their module on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fetcher import TraceFetcher, trace_availability
    from .jaeger import JaegerClient, JaegerError, JaegerUnavailable
    from .model import Span, SpanFormatError
    from .receiver import OtlpReceiver
    from .sink import SpanSink

_WHERE = {
    "JaegerClient": "jaeger",
    "JaegerError": "jaeger",
    "JaegerUnavailable": "jaeger",
    "OtlpReceiver": "receiver",
    "Span": "model",
    "SpanFormatError": "model",
    "SpanSink": "sink",
    "TraceFetcher": "fetcher",
    "trace_availability": "fetcher",
}

__all__ = [
    "JaegerClient",
    "JaegerError",
    "JaegerUnavailable",
    "OtlpReceiver",
    "Span",
    "SpanFormatError",
    "SpanSink",
    "TraceFetcher",
    "trace_availability",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
