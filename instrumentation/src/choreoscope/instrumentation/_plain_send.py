"""kafka-python's own `send`, underneath OpenTelemetry's kafka-python instrumentation.

A send through Choreoscope already has its PRODUCER span and writes its `traceparent`. When
OpenTelemetry's `KafkaInstrumentor` is active too, it has replaced `KafkaProducer.send` with
a wrapper that starts a second span (a root of a trace of its own: ours is not current) and
appends a second `traceparent` header, so every record carried two and every consumer saw a
`duplicate_header` problem. Our sends call the method that wrapper wraps: one span and one
`traceparent` per record, while sends made without Choreoscope are still traced by it.

Only that wrapper is stepped over: a subclass's own `send`, a `send` set on the instance, or
any other wrapper is called as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_OTEL_KAFKA = "opentelemetry.instrumentation.kafka"


class PlainSend:
    """`plain(producer)` gives the producer's `send` to call: the one OpenTelemetry's kafka
    instrumentation wraps, if that wrapper is what `producer.send` resolves to, else
    `producer.send`. The answer is kept until the class attribute it came from changes
    (instrumented or uninstrumented later), so a send pays one dict lookup for it."""

    __slots__ = ("_found", "_owner", "_send")

    def __init__(self) -> None:
        self._owner: type | None = None
        self._found: Any = None
        self._send: Callable[..., Any] | None = None

    def __call__(self, producer: Any) -> Callable[..., Any]:
        owner = self._owner
        if owner is not None and owner.__dict__.get("send") is self._found and self._send:
            return self._send
        return self._resolve(producer)

    def _resolve(self, producer: Any) -> Callable[..., Any]:
        if "send" in getattr(producer, "__dict__", ()):
            self._owner = None  # set on the instance: never cached, never stepped over
            return producer.send  # type: ignore[no-any-return]
        for owner in type(producer).__mro__:
            found = owner.__dict__.get("send")
            if found is not None:
                break
        else:
            return producer.send  # type: ignore[no-any-return]  # kafka-python's error
        send = producer.send
        wrapper = getattr(found, "_self_wrapper", None)
        inner = getattr(found, "__wrapped__", None)
        if (wrapper is not None and inner is not None
                and str(getattr(wrapper, "__module__", "")).startswith(_OTEL_KAFKA)):
            send = inner.__get__(producer, type(producer))
        self._owner, self._found, self._send = owner, found, send
        return send  # type: ignore[no-any-return]
