"""`instrument_producer`: a kafka-python producer whose every record carries the envelope.

    producer = instrument_producer(KafkaProducer(bootstrap_servers=...), service="orders")
    producer.publish("orders", "order.placed", {"order_id": "ord_7821"}, key="ord_7821")
    producer.send("legacy", value=b"...")          # unchanged call, now with headers and a span

Every record gains the CloudEvents binary-mode headers of `wire.encode_headers` and the W3C
`traceparent` (and `tracestate`) of its `send {topic}` PRODUCER span. The span starts before
the wrapped `send` and ends when the record's future completes, so a failed delivery (or a
synchronous error such as `MessageSizeTooLargeError`) marks it ERROR; the error still reaches
the caller. Inside a `traced_consumer` handler the new event inherits the handled event's
correlation id, takes its id as causation id, and the span continues the handler's trace.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import DEFAULT_TRACE_STATE

from . import semconv, wire
from ._clock import rfc3339_from_ms, utc_now_rfc3339
from ._declared_values import SENDING, declare_serialized_values
from ._deferred_span import SendSpan, SendSpanStarter, log_failure_once
from ._fastspan import SpanStarter
from ._plain_send import PlainSend
from ._send_inputs import (
    carried_envelope,
    context_from_traceparent,
    key_as_text,
    merge_headers,
    read_caller_headers,
    serializers,
)
from ._wakeups import coalesce_wakeups as _coalesce_wakeups
from .context import current_event
from .errors import UsageError
from .event import Event, flow_of
from .ids import new_event_id
from .naming import is_past_tense
from .traceparent import format_traceparent

__all__ = ["TracedProducer", "instrument_producer"]

_log = logging.getLogger("choreoscope.instrumentation")
_SCOPE = "choreoscope.instrumentation"
_NO_TRACE_STATE = DEFAULT_TRACE_STATE
_OCTET_STREAM = wire.OCTET_STREAM
_MAX_CACHED_TOPICS = 4096
_HEADER_SEQUENCES = (list, tuple)
# Keys whose text is the subject by default: what the key is on the wire, or its plain text
# (an int or UUID given to a key_serializer); not the repr of an object or a dict, nor of
# a bool (an int to isinstance), which names no entity.
_TEXT_KEYS = (bytes, bytearray, memoryview, str, int, UUID)


def _subject_key(key: Any) -> bool:
    """Whether `key`'s text is the event's subject when none is given."""
    return isinstance(key, _TEXT_KEYS) and not isinstance(key, bool)


def _key_subject(key: Any, key_text: str | None) -> str | None:
    """The subject a key gives: its text, or for key bytes that are not printable UTF-8 (a
    binary id, a hash) their hex. Decoding such bytes with replacement characters made
    different keys one subject, whose events were judged out of order against each other."""
    if not _subject_key(key):
        return None
    if isinstance(key, _BYTES_LIKE):
        return wire.key_text(bytes(key))
    return key_text


_BYTES_LIKE = (bytes, bytearray, memoryview)

# Event types already checked for past tense: each bad one is logged once per process.
_checked_types: set[str] = set()


def instrument_producer(
    producer: Any,
    *,
    service: str,
    tracer_provider: trace.TracerProvider | None = None,
    coalesce_wakeups: bool = True,
) -> TracedProducer:
    """Wrap an existing `kafka.KafkaProducer`; `service` becomes every event's `ce_source`.

    `tracer_provider` defaults to the global one (looked up when spans start, so a provider
    installed later is used). `coalesce_wakeups` (default on) stops the producer's network
    thread being woken again while a wake-up is still pending (see `_wakeups`): under a
    burst, kafka-python otherwise wakes it on every send once two batches wait, which the
    envelope's larger records reach several times sooner.
    """
    return TracedProducer(
        producer,
        service=service,
        tracer_provider=tracer_provider,
        coalesce_wakeups=coalesce_wakeups,
    )


class TracedProducer:
    """A kafka-python producer stamping the envelope and a PRODUCER span on every record.

    `.wrapped` is the producer itself and `.service` the source name; every attribute not
    defined here (`flush`, `close`, `partitions_for`, `metrics`, ...) passes through.

    - `send(topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None)`:
      kafka-python's call, returning its future (see `send`).
    - `publish(topic, event_type, data, ...) -> Event`: a new event with `data` as JSON.
    - `send_event(topic, event, value, ...) -> future`: the same send path for code that
      has its own `Event` (an outbox relay, a replayer): the full envelope for `event`, a
      `send {topic}` span (parent: `parent_context`, an OpenTelemetry `Context` or a
      `traceparent` string, default the current context) with `extra_attributes` added.
    """

    __slots__ = (
        "_declares",
        "_plain_send",
        "_serializes_keys",
        "_serializes_values",
        "_start_send_span",
        "_topics",
        "_tracer",
        "service",
        "tracer_provider",
        "wrapped",
    )

    def __init__(
        self,
        producer: Any,
        *,
        service: str,
        tracer_provider: trace.TracerProvider | None = None,
        coalesce_wakeups: bool = True,
    ) -> None:
        if isinstance(producer, TracedProducer):
            raise UsageError(
                "expected a kafka.KafkaProducer, got a TracedProducer (already instrumented)"
            )
        if not callable(getattr(producer, "send", None)):
            raise UsageError(f"expected a kafka.KafkaProducer, got {type(producer).__name__}")
        if not isinstance(service, str):
            raise UsageError(f"expected the service name as a str, got {type(service).__name__}")
        if not service:
            raise ValueError("expected a non-empty service name, got ''")
        self.wrapped = producer
        self.service = service
        self.tracer_provider = tracer_provider  # None: the global one (an outbox relay's too)
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._start_send_span = SendSpanStarter(SpanStarter(self._tracer))
        self._plain_send = PlainSend()
        self._serializes_values, self._serializes_keys = serializers(producer)
        # the producer's serializer makes the bytes: a non-JSON value gets its content-type
        self._declares = self._serializes_values and declare_serialized_values(producer)
        # Per topic: the span name and the attributes every send to it shares.
        self._topics: dict[str, tuple[str, dict[str, str]]] = {}
        if coalesce_wakeups:
            _coalesce_wakeups(producer)

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"TracedProducer({self.wrapped!r}, service={self.service!r})"

    # `with` looks special methods up on the type, past `__getattr__`: pass them on here.
    def __enter__(self) -> TracedProducer:
        enter = getattr(type(self.wrapped), "__enter__", None)
        if enter is not None:
            enter(self.wrapped)
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        leave = getattr(type(self.wrapped), "__exit__", None)
        if leave is not None:
            return leave(self.wrapped, *exc_info)
        self.wrapped.close()
        return None

    # -- the three ways to send ------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Any:
        """kafka-python's `send`, plus the envelope headers and a `send {topic}` span.

        `headers` may be a list, a tuple or None; the caller's list is never changed. Headers
        the caller set win: a `ce_*` header replaces ours (its value also goes into the span).
        A caller's `traceparent` (and `tracestate`), such as one `propagate.inject` wrote,
        parents our span, and the record carries our span's context in its place, so
        consumers continue the trace as children of the send. A dict or list
        `value` is sent as compact JSON unless the producer has a `value_serializer` (then
        every value goes to it untouched, and a content-type is declared from the bytes it
        makes when they are not JSON: `_declared_values.py`); bytes go as they are, declared
        `application/octet-stream` unless they start like JSON (`{` or `[`).

        A value that already carries its envelope (a CloudEvents structured-mode object, or a
        hand-written `{eventId, eventType, ...}` one) and no caller `ce_*` header is the event
        as it stands: no binary-mode header is added beside it (only `traceparent`, unless the
        envelope holds one, which then parents the span), and the span names its id.

        The event type is the caller's `ce_type` header, else the topic name (not checked for
        past tense, here or by the decoder: nobody chose it). The subject defaults to the key, the schema version to
        `1`, the time (`ce_time`) to `timestamp_ms` when given, else now. Returns kafka-python's future; a failed delivery fails it and marks the span
        ERROR, a synchronous error propagates after doing the same.
        """
        # Positional: id, type, source, subject, correlation_id, causation_id, schema_version.
        event = Event(None, None, self.service, None, None, None, "1")
        caller_traceparent = caller_tracestate = None
        headers_out: Any = headers  # None, or something kafka-python rejects itself
        if headers and type(headers) in _HEADER_SEQUENCES:
            headers_out = list(headers)
            caller_traceparent, caller_tracestate = read_caller_headers(headers_out, event)
            if event.type is not None and event.type not in _checked_types:
                _check_type(event.type)
        elif type(headers) in _HEADER_SEQUENCES:
            headers_out = None  # empty
        own_identity = event.id is not None or event.type is not None  # caller's ce_* headers
        if event.type is None:
            event.type = topic
        if timestamp_ms is not None and event.time is None:
            event.time = rfc3339_from_ms(timestamp_ms)  # the record's time is the fact's
        key_text = None
        if key is not None:
            key_text = key_as_text(key)
            if event.subject is None:
                event.subject = _key_subject(key, key_text)
        self._complete(event)

        content_type = None
        if not self._serializes_values:
            kind = type(value)
            if kind is bytes:
                if not wire.is_json(value):
                    content_type = _OCTET_STREAM
            elif kind is dict or kind is list:
                value = wire.json_bytes(value)
            elif isinstance(value, _BYTES_LIKE) and not wire.is_json(bytes(value)):
                content_type = _OCTET_STREAM
        carried = None
        envelope_traceparent = None
        if not own_identity and content_type is None:
            carried = carried_envelope(value)
            if carried is not None:
                # The value is the event (structured mode, or a hand-written envelope): no
                # binary-mode headers beside it, and the span names the event it carries.
                event = carried
                if caller_traceparent is None and carried.traceparent:
                    # The envelope's own trace context stays the event's (it is in the
                    # value, which is sent as it is) and parents the span.
                    envelope_traceparent = carried.traceparent
        parent = None
        if envelope_traceparent is not None:
            parent = context_from_traceparent(
                envelope_traceparent, carried.tracestate if carried is not None else None)
            event.traceparent = envelope_traceparent
        elif caller_traceparent is not None:
            parent = context_from_traceparent(caller_traceparent, caller_tracestate)
        return self._emit(
            topic,
            event,
            value,
            key,
            key_text,
            headers_out,
            partition,
            timestamp_ms,
            content_type,
            parent,
            None,
            envelope_traceparent is not None,
            carried is not None,
        )

    def publish(
        self,
        topic: str,
        event_type: str,
        data: Any,
        *,
        key: Any = None,
        subject: str | None = None,
        schema_version: str = "1",
        sequence: int | None = None,
    ) -> Event:
        """Publish a new event of `event_type` with `data` (sent as JSON) and return it.

        `data` goes as compact JSON (see `wire.json_default` for datetimes, UUIDs and the
        like; other values JSON has no type for raise `UsageError`); None is a tombstone and
        needs a key. A str `key` is sent UTF-8 encoded (unless the producer has a `key_serializer`) and is
        the default `subject`. A type whose last word is not past tense is published but
        logged once as a warning. Delivery is asynchronous: a failure marks the span ERROR and
        is logged as an error (logger `choreoscope.instrumentation`); use `send_event` when you
        need the future.
        """
        if not isinstance(event_type, str) or not event_type:
            raise UsageError(f"expected the event type as a non-empty str, got {event_type!r}")
        if event_type not in _checked_types:
            _check_type(event_type)
        if sequence is not None and (type(sequence) is not int):
            raise UsageError(f"expected the sequence as an int or None, got {sequence!r}")
        if subject is not None and not isinstance(subject, str):
            raise UsageError(f"expected the subject as a str or None, got {subject!r}")
        if data is None and key is None and not self._serializes_values:
            raise UsageError(
                "data None is sent as a tombstone (a null record value), which Kafka accepts "
                "only with a key: give key=..., or data such as {}"
            )
        key_text = key_as_text(key)
        if subject is None:
            subject = _key_subject(key, key_text)
        event = Event(
            id=None,
            type=event_type,
            source=self.service,
            subject=subject,
            schema_version=str(schema_version) if schema_version is not None else None,
            sequence=sequence,
            data=data,
            topic=topic,
        )
        self._complete(event)
        if self._serializes_values:
            value, content_type = data, None
        else:
            value, content_type = wire.encode_value(data)
        if type(key) is str and not self._serializes_keys:
            key = key.encode()
        future = self._emit(
            topic, event, value, key, key_text, None, None, None, content_type, None, None, False
        )
        # The caller holds no future: a failed delivery is logged (and on the span). The
        # errback keeps only strings: the event and its data are not held until the ack.
        future.add_errback(_log_failed_publish, event.type, event.id, topic)
        return event

    def send_event(
        self,
        topic: str,
        event: Event,
        value: Any,
        *,
        key: Any = None,
        headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        content_type: str | None = None,
        parent_context: Context | str | None = None,
        extra_attributes: dict[str, Any] | None = None,
    ) -> Any:
        """Send `event` as it is (full envelope, PRODUCER span) with `value` as the record value.

        Building block for code that owns its events, such as the outbox relay: `event.id`,
        `.source` (this producer's service), `.time` (now) and `.correlation_id` (the id) are
        filled in place when missing; nothing is inherited from the handled event. `value` goes
        to the wrapped `send` as it is (through the producer's `value_serializer`, if any);
        `content_type` is written only when given (omit it for JSON). `headers` are sent
        before ours and win over them. `parent_context` is the span's parent: an
        OpenTelemetry `Context`, a `traceparent` string (an invalid one is logged and
        ignored), or None for the current context. `extra_attributes` are added to the span.
        Returns kafka-python's future.
        """
        if not isinstance(event, Event):
            raise UsageError(f"expected an Event, got {type(event).__name__}")
        if event.id is None:
            event.id = new_event_id()
        if event.source is None:
            event.source = self.service
        if event.time is None:
            event.time = utc_now_rfc3339()
        if event.correlation_id is None:
            event.correlation_id = event.id
        parent: Context | None
        if isinstance(parent_context, str):
            parent = context_from_traceparent(parent_context, None)
        else:
            parent = parent_context
        caller = list(headers) if headers else None
        return self._emit(
            topic,
            event,
            value,
            key,
            key_as_text(key),
            caller,
            partition,
            timestamp_ms,
            content_type,
            parent,
            extra_attributes,
            False,
        )

    # -- internals -------------------------------------------------------------------------

    def _complete(self, event: Event) -> None:
        """Fill id, time and the correlation/causation chain from the handled event."""
        if event.id is None:
            event.id = new_event_id()
        if event.time is None:
            event.time = utc_now_rfc3339()
        handled = current_event()
        if handled is None:
            if event.correlation_id is None:
                event.correlation_id = event.id
            return
        if event.correlation_id is None:
            event.correlation_id = flow_of(handled) or event.id
        if event.causation_id is None:
            event.causation_id = handled.id

    def _topic(self, topic: str) -> tuple[str, dict[str, str]]:
        entry = self._topics.get(topic)
        if entry is None:
            entry = (
                semconv.send_span_name(topic),
                {
                    semconv.MESSAGING_SYSTEM: semconv.KAFKA,
                    semconv.MESSAGING_OPERATION_NAME: "send",
                    semconv.MESSAGING_OPERATION_TYPE: "send",
                    semconv.MESSAGING_DESTINATION_NAME: topic,
                },
            )
            if len(self._topics) < _MAX_CACHED_TOPICS:
                self._topics[topic] = entry
        return entry

    def _emit(
        self,
        topic: str,
        event: Event,
        value: Any,
        key: Any,
        key_text: str | None,
        caller_headers: Any,
        partition: int | None,
        timestamp_ms: int | None,
        content_type: str | None,
        parent: Context | None,
        extra_attributes: dict[str, Any] | None,
        keep_envelope_traceparent: bool,
        envelope_in_value: bool = False,
    ) -> Any:
        span: SendSpan | None = None
        traceparent = tracestate = None
        try:
            entry = self._topics.get(topic)
            name, base = entry if entry is not None else self._topic(topic)
            attrs = _span_attributes(base, event, key_text)
            if extra_attributes:
                attrs.update(extra_attributes)
            span = self._start_send_span(name, parent, attrs)
            if not keep_envelope_traceparent:
                sc = span.get_span_context()
                if sc.is_valid:
                    traceparent = format_traceparent(sc.trace_id, sc.span_id, sc.trace_flags)
                    state = sc.trace_state  # a root span's is the shared empty one
                    if state is not _NO_TRACE_STATE and state:
                        tracestate = state.to_header()
                    event.traceparent = traceparent
                    event.tracestate = tracestate
        except Exception:  # noqa: BLE001 - telemetry never takes the host down
            log_failure_once("could not start the producer span; sending without it")
        if envelope_in_value:
            headers = wire.trace_headers(traceparent, tracestate)
        else:
            headers = wire.encode_headers(event, traceparent, tracestate, content_type)
        if caller_headers is not None and type(caller_headers) is list:
            headers = merge_headers(caller_headers, headers)
        elif caller_headers is not None:
            headers = caller_headers  # not a list: let kafka-python reject it as it always has
        try:
            send = self._plain_send(self.wrapped)
            if self._declares:
                SENDING.ours = True
                try:
                    future = send(topic, value, key, headers, partition, timestamp_ms)
                finally:
                    SENDING.ours = False
            else:
                future = send(topic, value, key, headers, partition, timestamp_ms)
        except BaseException as exc:
            if span is not None:
                span(exc)
            raise
        if span is not None:
            try:
                future.add_callback(span)
                future.add_errback(span)
            except Exception:  # noqa: BLE001
                log_failure_once("could not watch the send's future; span ended now")
                span(None)
        return future


def _span_attributes(base: dict[str, str], event: Event, key_text: str | None) -> dict[str, Any]:
    """`semconv.send_attributes`, from the per-topic part computed once."""
    attrs: dict[str, Any] = base.copy()
    if key_text is not None:
        attrs[semconv.MESSAGING_KAFKA_MESSAGE_KEY] = key_text
    semconv.event_attributes(event, attrs)
    return attrs


def _log_failed_publish(
    event_type: str | None, event_id: str | None, topic: str, exc: BaseException
) -> None:
    # kafka-python's TransactionAbortedError (by name: this module never imports kafka): the
    # caller aborted the transaction the record was in, its own choice, not a failure
    if type(exc).__name__ == "TransactionAbortedError":
        _log.info("choreoscope: publishing %s %s to %r was aborted with its transaction",
                  event_type, event_id, topic)
        return
    _log.error(
        "choreoscope: publishing %s %s to %r failed: %s: %s",
        event_type,
        event_id,
        topic,
        type(exc).__name__,
        exc,
    )


def _check_type(event_type: str) -> None:
    if len(_checked_types) < 10_000:
        _checked_types.add(event_type)
    if not is_past_tense(event_type):
        _log.warning(
            "event type %r does not read as past tense (expected e.g. 'order.placed'); "
            "published anyway",
            event_type,
        )
