"""`traced_consumer`: wrap a handler `(event: Event) -> Any` into one that takes a Kafka record.

    @traced_consumer(service="billing", group="billing")
    def on_order_placed(event: Event) -> None:
        producer.publish("payments", "payment.requested", {...})   # inherits the chain

    for record in kafka_consumer:
        on_order_placed(record)

The record is kafka-python's `ConsumerRecord`; a confluent-kafka `Message` is read too.

Around exactly the handler call the wrapper opens the CONSUMER span `process {topic}` whose
parent is the producer's span (from the record's `traceparent`), linked to the span that was
current before, if any. Inside the handler `current_event()` is the event and the consumer
span is the current span, so a publish through an instrumented producer continues the chain.

Each decorated handler (one consumer group) remembers, per subject, the highest `ce_sequence`
and newest `ce_time` it processed (`ordering.OrderTracker`, bounded); a record arriving behind
them gets `choreoscope.out_of_order=true` and a `choreoscope.out_of_order` span event naming
what came before, so late arrivals show in Jaeger too.

A record that cannot be read properly still reaches the handler: whatever could be read, a
fresh root trace, and the decoder's problems on `event.problems` and on the span. Only the
handler's own exceptions propagate (recorded on the span, status ERROR, re-raised unchanged).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
)

from . import semconv
from ._fastspan import SpanStarter
from .context import _current
from .decoder import decode_record
from .errors import UsageError
from .event import Event
from .ordering import OrderTracker
from .traceparent import remote_context_of

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger(__name__)
_SCOPE = "choreoscope.instrumentation"
_MAX_CACHED_TOPICS = 4096
_CONSUMER = SpanKind.CONSUMER
_warned_types: set[type] = set()  # record types already warned about, once each
# What a handler given a whole poll() result or batch is called with.
_BATCHES = (list, tuple, dict)


def traced_consumer(
    _misplaced: Any = None,
    /,
    *,
    service: str | None = None,
    group: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    skew: float = 0.0,
    max_subjects: int = 10_000,
) -> _Decorator:
    """Decorate a handler `(event: Event, ...) -> Any` so that it takes a Kafka record instead.

    `service` is the consuming service's name (recorded as `choreoscope.service`: the
    collector credits the processing to it, whatever the tracer provider's `service.name`),
    `group` its consumer group (recorded as `messaging.consumer.group.name`). `skew`
    (seconds) is the clock difference tolerated before an older `ce_time` counts as out of
    order; `max_subjects` bounds the subjects remembered for that check. Sync handlers give a sync wrapper, async handlers an async one.
    Its options are keywords: `@traced_consumer(service="payment-service")`, never
    `@traced_consumer` alone or the service name by position (both raise `UsageError`).
    """
    if _misplaced is not None:
        raise UsageError(
            "expected the options by keyword, as in @traced_consumer(service=\"payment-service\"), "
            + (f"got @traced_consumer without them above {_name_of(_misplaced)}"
               if callable(_misplaced) else f"got {_misplaced!r} by position")
        )
    if service is None:
        raise UsageError("expected service=, the consuming service's name, got none")
    if not isinstance(service, str):
        raise UsageError(f"expected the service name as a str, got {type(service).__name__}")
    if not service:
        raise ValueError("expected a non-empty service name, got ''")
    if group is not None and not isinstance(group, str):
        raise UsageError(
            f"expected the consumer group as a str or None, got {type(group).__name__}"
        )
    if group == "":
        raise ValueError("expected a non-empty consumer group name or None, got ''")
    tracker = OrderTracker(skew=skew, max_subjects=max_subjects)
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    return _Decorator(_Processing(tracer, group, tracker, service))


class _Processing:
    """What one decorated handler needs per record: decode, span, context, ordering."""

    __slots__ = ("group", "service", "start_span", "topics", "tracer", "tracker")

    def __init__(self, tracer: trace.Tracer, group: str | None, tracker: OrderTracker,
                 service: str | None = None) -> None:
        self.tracer = tracer
        self.start_span = SpanStarter(tracer)
        self.group = group
        self.service = service
        self.tracker = tracker
        # Per topic: the span name and the attributes every record of it shares.
        self.topics: dict[str | None, tuple[str, dict[str, Any]]] = {}

    def decode(self, record: Any) -> Event:
        if type(record) is Event:
            return record  # an already decoded event, e.g. a handler called in a unit test
        get = getattr
        if type(record) in _BATCHES:
            raise UsageError(
                f"expected one Kafka ConsumerRecord per call, got a {type(record).__name__} of "
                f"{len(record)}: call the handler once per record (poll() returns a dict of "
                "lists of records)")
        if not hasattr(record, "value") and type(record) not in _warned_types:
            _warned_types.add(type(record))
            _log.warning(
                "choreoscope: expected a Kafka ConsumerRecord, got %s; handled as an empty record",
                type(record).__name__,
            )
        value = get(record, "value", None)
        if callable(value):  # a confluent-kafka Message: its fields are methods
            return _decode_message(record)
        key = get(record, "key", None)
        if key is not None and type(key) is not bytes:
            key = _key_bytes(key)  # a consumer with a key_deserializer
        return decode_record(
            get(record, "headers", None),
            value,
            topic=get(record, "topic", None),
            partition=get(record, "partition", None),
            offset=get(record, "offset", None),
            key=key,
            timestamp_ms=get(record, "timestamp", None),
        )

    def begin(self, event: Event) -> tuple[Span, object, object]:
        """Start the CONSUMER span and make it and `event` current; `end` undoes it."""
        span = self._start(event)
        otel_token = otel_context.attach(trace.set_span_in_context(span))
        event_token = _current.set(event)
        return span, otel_token, event_token

    @staticmethod
    def end(state: tuple[Span, Any, Any], exc: BaseException | None) -> None:
        span, otel_token, event_token = state
        _current.reset(event_token)
        otel_context.detach(otel_token)
        try:
            if exc is not None and isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
            span.end()
        except Exception:  # noqa: BLE001 - telemetry never takes the host down
            _log.exception("choreoscope: could not end the consumer span")

    def _topic(self, topic: str | None) -> tuple[str, dict[str, Any]]:
        """`semconv.process_attributes` without the per-record part, computed once per topic."""
        shared = semconv.process_attributes(
            Event(id=None, type=None, source=None, topic=topic), self.group, self.service
        )
        entry = (semconv.process_span_name(topic or ""), shared)
        if len(self.topics) < _MAX_CACHED_TOPICS:
            self.topics[topic] = entry
        return entry

    def _start(self, event: Event) -> Span:
        late = None
        try:
            late = self.tracker.observe(event)
        except Exception:  # noqa: BLE001 - never for an annotation
            _log.exception("choreoscope: could not check the event's order")
        try:
            ambient = trace.get_current_span().get_span_context()
            links = [Link(ambient)] if ambient.is_valid else None
            entry = self.topics.get(event.topic)
            if entry is None:
                entry = self._topic(event.topic)
            name, shared = entry
            attributes = shared.copy()
            if event.partition is not None:
                attributes[semconv.MESSAGING_DESTINATION_PARTITION_ID] = str(event.partition)
            if event.offset is not None:
                attributes[semconv.MESSAGING_KAFKA_OFFSET] = event.offset
            if event.key is not None:
                attributes[semconv.MESSAGING_KAFKA_MESSAGE_KEY] = event.key.decode(
                    "utf-8", "replace"
                )
            semconv.event_attributes(event, attributes)
            # Set once the span has started (a sampler is not shown them).
            later: dict[str, Any] | None = None
            if event.problems or late is not None:
                later = {}
                if event.problems:
                    later[semconv.ENVELOPE_PROBLEMS] = tuple(event.problems)
                if late is not None:
                    later[semconv.OUT_OF_ORDER] = True
            span = self.start_span(
                name, _parent_context(event), _CONSUMER, attributes, links, later
            )
        except Exception:  # noqa: BLE001 - telemetry never takes the host down
            _log.exception("choreoscope: could not start the consumer span")
            return trace.INVALID_SPAN
        if late is not None:
            try:
                span.add_event(semconv.OUT_OF_ORDER_EVENT, late.attributes())
            except Exception:  # noqa: BLE001 - never for an annotation
                _log.exception("choreoscope: could not annotate the consumer span")
        return span


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    return str(key).encode()


def _parent_context(event: Event) -> otel_context.Context:
    """The producer's span as a remote parent, or an empty context (a fresh root trace)."""
    tp = event.traceparent
    if tp is None:  # the decoder keeps only a valid one: version-trace-parent-flags[-...]
        return otel_context.Context()
    return remote_context_of(tp, event.tracestate)


class _Decorator:
    """Turns `(event, ...) -> R` into `(record, ...) -> R` (async stays async)."""

    __slots__ = ("_processing",)

    def __init__(self, processing: _Processing) -> None:
        self._processing = processing

    @overload
    def __call__(
        self, handler: Callable[Concatenate[Event, P], Awaitable[R]]
    ) -> Callable[Concatenate[Any, P], Awaitable[R]]: ...

    @overload
    def __call__(
        self, handler: Callable[Concatenate[Event, P], R]
    ) -> Callable[Concatenate[Any, P], R]: ...

    def __call__(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(handler):
            raise UsageError(f"expected a handler (event) -> Any, got {type(handler).__name__}")
        if inspect.isgeneratorfunction(handler) or inspect.isasyncgenfunction(handler):
            # Its body would run after the span and the handled event's context had ended:
            # what it publishes would start new flows.
            raise UsageError(
                f"expected a handler that runs when called, got the generator function "
                f"{getattr(handler, '__qualname__', handler)!r}: collect its results in a list "
                "(or drive it) inside a plain handler")
        processing = self._processing

        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        if _is_method(handler):
            return _method_wrapper(handler, processing, is_async)

        if is_async:

            @functools.wraps(handler)
            async def async_wrapper(record: Any, /, *args: Any, **kwargs: Any) -> Any:
                event = processing.decode(record)
                state = processing.begin(event)
                try:
                    result = await handler(event, *args, **kwargs)
                except BaseException as exc:
                    processing.end(state, exc)
                    raise
                processing.end(state, None)
                return result

            return async_wrapper

        @functools.wraps(handler)
        def wrapper(record: Any, /, *args: Any, **kwargs: Any) -> Any:
            event = processing.decode(record)
            state = processing.begin(event)
            try:
                result = handler(event, *args, **kwargs)
            except BaseException as exc:
                processing.end(state, exc)
                raise
            processing.end(state, None)
            return result

        return wrapper


def _is_method(handler: Callable[..., Any]) -> bool:
    """A function defined in a class body, taking `self` or `cls` first (decorated unbound)."""
    if not inspect.isfunction(handler) or "." not in handler.__qualname__:
        return False
    code = handler.__code__
    return code.co_argcount >= 2 and code.co_varnames[0] in ("self", "cls")


def _method_wrapper(
    handler: Callable[..., Any], processing: _Processing, is_async: bool
) -> Callable[..., Any]:
    """For `def handle(self, event)`: the wrapper takes `(self, record)`."""
    if is_async:

        @functools.wraps(handler)
        async def async_method(owner: Any, record: Any, /, *args: Any, **kwargs: Any) -> Any:
            event = processing.decode(record)
            state = processing.begin(event)
            try:
                result = await handler(owner, event, *args, **kwargs)
            except BaseException as exc:
                processing.end(state, exc)
                raise
            processing.end(state, None)
            return result

        return async_method

    @functools.wraps(handler)
    def method(owner: Any, record: Any, /, *args: Any, **kwargs: Any) -> Any:
        event = processing.decode(record)
        state = processing.begin(event)
        try:
            result = handler(owner, event, *args, **kwargs)
        except BaseException as exc:
            processing.end(state, exc)
            raise
        processing.end(state, None)
        return result

    return method


def _name_of(handler: Any) -> str:
    """How a misdecorated handler is named in an error: its qualified name, else its repr."""
    name = getattr(handler, "__qualname__", None)
    return f"{name}()" if isinstance(name, str) else repr(handler)


def _decode_message(message: Any) -> Event:
    """A confluent-kafka `Message` (what a service on that client hands over), read through
    its methods as kafka-python's record is through its attributes."""
    ts_type, ts = message.timestamp()
    key = message.key()
    return decode_record(
        message.headers(),
        message.value(),
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=key if key is None or type(key) is bytes else _key_bytes(key),
        timestamp_ms=ts if ts_type else None,
    )
