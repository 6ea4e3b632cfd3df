"""`traced_producer`: publish what a function returns.

    @traced_producer(producer, "orders", "order.placed", key=lambda d: d["order_id"])
    def place_order(cart: Cart) -> dict:
        return {"order_id": "ord_7821", "total": 42}

    event = place_order(cart)     # the published Event

Everything is checked once, at decoration time; a call checks only that the function
returned a dict. Async functions give an async wrapper.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, overload

from opentelemetry import trace

from .errors import UsageError
from .event import Event
from .producer import TracedProducer

P = ParamSpec("P")

KeyArg = str | bytes | Callable[[dict[str, Any]], Any] | None
SubjectArg = str | Callable[[dict[str, Any]], str | None] | None


class _Decorator:
    """The decorator `traced_producer(...)` returns (typed for sync and async functions)."""

    __slots__ = ("_publish",)

    def __init__(self, publish: Callable[[Any], Event]) -> None:
        self._publish = publish

    @overload
    def __call__(
        self, fn: Callable[P, Awaitable[Mapping[str, Any]]]
    ) -> Callable[P, Awaitable[Event]]: ...
    @overload
    def __call__(self, fn: Callable[P, Mapping[str, Any]]) -> Callable[P, Event]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        if not callable(fn):
            raise UsageError(f"expected a function to decorate, got {type(fn).__name__}")
        publish = self._publish
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Event:
                return publish(await fn(*args, **kwargs))

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Event:
            return publish(fn(*args, **kwargs))

        return wrapper


def traced_producer(
    producer: TracedProducer,
    topic: str,
    event_type: str,
    *,
    key: KeyArg = None,
    subject: SubjectArg = None,
    schema_version: str = "1",
    tracer_provider: trace.TracerProvider | None = None,
) -> _Decorator:
    """Decorate a function returning a dict: each call publishes it and returns the `Event`.

    The dict is the event's data, published on `topic` as `event_type` through `producer`
    (from `instrument_producer`). `key` and `subject` are values or callables of the dict.
    `tracer_provider` makes the send spans of these calls, instead of the producer's own.
    Misuse raises `UsageError` (a `TypeError`): a producer that is not a `TracedProducer`, a
    non-str topic or type, non-callable non-str key or subject at decoration time; a
    function that returns something other than a dict at call time.
    """
    if not isinstance(producer, TracedProducer):
        raise UsageError(
            f"expected a TracedProducer (from instrument_producer), got {type(producer).__name__}"
        )
    if not isinstance(topic, str) or not topic:
        raise UsageError(f"expected the topic as a non-empty str, got {topic!r}")
    if not isinstance(event_type, str) or not event_type:
        raise UsageError(f"expected the event type as a non-empty str, got {event_type!r}")
    if key is not None and not isinstance(key, str | bytes) and not callable(key):
        raise UsageError(f"expected the key as a str, bytes, a callable or None, got {key!r}")
    if subject is not None and not isinstance(subject, str) and not callable(subject):
        raise UsageError(f"expected the subject as a str, a callable or None, got {subject!r}")
    if tracer_provider is not None:
        # The same Kafka producer and source; only the spans go elsewhere. The wake-up
        # coalescing, if the producer has it, is already on the Kafka producer itself.
        producer = TracedProducer(producer.wrapped, service=producer.service,
                                  tracer_provider=tracer_provider, coalesce_wakeups=False)
    key_of = key if callable(key) else None
    subject_of = subject if callable(subject) else None
    qualname = f"{topic}/{event_type}"

    def publish(data: Any) -> Event:
        if not isinstance(data, dict):
            raise UsageError(
                f"expected the function decorated with traced_producer({qualname}) to return "
                f"a dict, got {type(data).__name__}"
            )
        return producer.publish(
            topic,
            event_type,
            data,
            key=key_of(data) if key_of is not None else key,
            subject=subject_of(data) if subject_of is not None else subject,  # type: ignore[arg-type]
            schema_version=schema_version,
        )

    return _Decorator(publish)
