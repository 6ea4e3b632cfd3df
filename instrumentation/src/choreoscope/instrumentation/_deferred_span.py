"""Send spans built when the broker answers: nothing but their ids and start wait in flight.

A `send {topic}` span lasts from the send until kafka-python's future completes, and a busy
producer has thousands of records in flight. An SDK span holds a dozen objects the cyclic
garbage collector tracks (the span, its context, attribute mapping, bounded lists of events
and links, ...). Held for the whole flight they outlive the young collections, and the
collector walks every one of them again in each older one: ending the span at the send
instead made the producer about 18% faster, with the same sends.

`SendSpanStarter` therefore decides at the send what the SDK decides in `start_span` (the
trace id, the sampling decision, a new span id, the flags) so the `traceparent` can go out
with the record, and returns a `DeferredSpan` holding only that, the start time and the
attributes. When the future completes, the `DeferredSpan` (its callback and errback) builds
the SDK span with that context, starts it at the recorded time, marks an error, and ends it:
the span exported is the one the SDK would have exported.

Taken only where nothing can tell the difference: the conditions of `SpanStarter`'s fast path
(the SDK's tracer, a static sampler, span processors whose `on_start` does nothing, so that
no processor sees the span start late; one added while records are in flight sees their
starts at their acks) and the SDK internals used here being present. In
any other case the span is started at the send through `SpanStarter`, and `SpanEnder` ends it
when the future completes. Both never raise: telemetry never takes the host down.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import semconv
from ._fastspan import SpanStarter, fill_attributes

try:
    from opentelemetry.sdk.trace import _Span as SdkSpan
except ImportError:  # pragma: no cover - an SDK without it: spans start at the send
    SdkSpan = None  # type: ignore[assignment,misc]

_log = logging.getLogger("choreoscope.instrumentation")

# What of the SDK's tracer and span this module relies on; any missing: spans start at the send.
_TRACER_NEEDS = ("id_generator", "sampler", "resource", "span_processor",
                 "instrumentation_info", "_span_limits", "_instrumentation_scope",
                 "_tracer_metrics", "_is_enabled")
_SPAN_NEEDS = ("name", "context", "parent", "sampler", "resource", "attributes",
               "span_processor", "kind", "links", "instrumentation_info", "limits",
               "instrumentation_scope", "record_end_metrics")


def _span_takes_what_we_give() -> bool:
    if SdkSpan is None or not hasattr(TraceFlags, "RANDOM_TRACE_ID"):
        return False
    try:
        parameters = inspect.signature(SdkSpan.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return all(name in parameters for name in _SPAN_NEEDS)


_SDK_READY = _span_takes_what_we_give()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def deferrable(tracer: Any) -> bool:
    """Whether this SDK tracer has everything `SendSpanStarter` reads."""
    return _SDK_READY and all(hasattr(tracer, name) for name in _TRACER_NEEDS) and hasattr(
        tracer.id_generator, "is_trace_id_random")


class SpanEnder:
    """The future's callback and errback for a span started at the send: ends it, marked
    ERROR on an exception outcome. One slotted object per send."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def get_span_context(self) -> SpanContext:
        context: SpanContext = self.span.get_span_context()
        return context

    def __call__(self, outcome: Any) -> None:
        end_span(self.span, outcome)


class DeferredSpan:
    """A recording send span not built yet: its context is final, the SDK span is made and
    ended when called with the send's outcome (metadata, or the exception); called again,
    it does nothing.

    It holds the parent's `SpanContext`, not the caller's `Context`: a record in flight must
    not keep the parent span and whatever else that context holds alive until its ack (the
    `Context` would only go to the processors' `on_start`, which do nothing here)."""

    __slots__ = ("_attributes", "_context", "_name", "_parent", "_record_end", "_resource",
                 "_start_ns", "_tracer")

    def __init__(self, tracer: Any, name: str, context: SpanContext, parent: SpanContext | None,
                 attributes: Mapping[str, Any], record_end: Callable[[], None]) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._record_end = record_end
        self._resource = tracer.resource  # as at the send, like the SDK's span
        self._start_ns = time_ns()

    def get_span_context(self) -> SpanContext:
        return self._context

    def __call__(self, outcome: Any) -> None:
        tracer = self._tracer
        if tracer is None:  # already finished
            return
        self._tracer = None
        try:
            span = SdkSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                sampler=tracer.sampler,
                resource=self._resource,
                attributes=None,
                span_processor=tracer.span_processor,
                kind=SpanKind.PRODUCER,
                links=(),
                instrumentation_info=tracer.instrumentation_info,
                limits=tracer._span_limits,
                instrumentation_scope=tracer._instrumentation_scope,
                record_end_metrics=self._record_end,
            )
            fill_attributes(span, self._attributes, _placement(outcome))
        except Exception:  # noqa: BLE001
            log_failure_once("could not build the producer span")
            return
        try:
            # A processor added while the record was in flight sees the start now; one
            # that fails there does not cost the span, whose id already went out.
            span.start(start_time=self._start_ns)
        except Exception:  # noqa: BLE001
            log_failure_once("a span processor failed at the producer span's start")
        end_span(span, outcome, placed=True)


class _NotRecorded:
    """A send span the sampler dropped: only its context, which goes out in `traceparent`."""

    __slots__ = ("_context",)

    def __init__(self, context: SpanContext) -> None:
        self._context = context

    def get_span_context(self) -> SpanContext:
        return self._context

    def __call__(self, outcome: Any) -> None:
        return None


SendSpan = SpanEnder | DeferredSpan | _NotRecorded
"""A send span in flight: `get_span_context()` now, called with the send's outcome later."""


class SendSpanStarter:
    """`start(name, parent, attributes)`: the send span of one record, its context now and the
    callable that finishes it later. Whether the tracer behind `starter` has what deferring
    needs is checked once per tracer, not per send."""

    __slots__ = ("_checked", "_starter")

    def __init__(self, starter: SpanStarter) -> None:
        self._starter = starter
        self._checked: tuple[Any, bool] | None = None  # (tracer, deferrable), last checked

    def __call__(self, name: str, parent: Context | None,
                 attributes: Mapping[str, Any]) -> SendSpan:
        starter = self._starter
        tracer = starter.sdk_tracer()
        if tracer is None or not self._deferrable(tracer) or not tracer._is_enabled():
            return SpanEnder(starter(name, parent, SpanKind.PRODUCER, attributes))
        # As the SDK's Tracer.start_span decides, for a static sampler and no attributes.
        parent_sc: SpanContext | None = trace.get_current_span(parent).get_span_context()
        if parent_sc is None or not parent_sc.is_valid:
            parent_sc = None
            trace_id = tracer.id_generator.generate_trace_id()
            random_trace_id = tracer.id_generator.is_trace_id_random()
        else:
            trace_id = parent_sc.trace_id
            random_trace_id = parent_sc.trace_flags.random_trace_id
        sampling = tracer.sampler.should_sample(parent, trace_id, name, SpanKind.PRODUCER,
                                                None, ())
        decision = sampling.decision
        flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        context = SpanContext(trace_id, tracer.id_generator.generate_span_id(),
                              is_remote=False, trace_flags=flags,
                              trace_state=sampling.trace_state)
        record_end = tracer._tracer_metrics.start_span(parent_sc, decision)
        if not decision.is_recording():
            return _NotRecorded(context)
        return DeferredSpan(tracer, name, context, parent_sc, attributes, record_end)

    def _deferrable(self, tracer: Any) -> bool:
        checked = self._checked
        if checked is not None and checked[0] is tracer:
            return checked[1]
        answer = deferrable(tracer)
        self._checked = (tracer, answer)
        return answer


def end_span(span: Any, outcome: Any, *, placed: bool = False) -> None:
    """End `span`; an exception outcome marks it ERROR first, the broker's answer (record
    metadata) gives it the partition and offset the record got (unless `placed`: it has them
    already). Never raises."""
    try:
        if isinstance(outcome, BaseException):
            span.set_status(Status(StatusCode.ERROR, f"{type(outcome).__name__}: {outcome}"))
            span.record_exception(outcome)
            span.set_attribute(semconv.ERROR_TYPE, type(outcome).__qualname__)
        elif not placed:
            span.set_attributes(_placement(outcome))
        span.end()
    except Exception:  # noqa: BLE001
        log_failure_once("could not end the producer span")


_failures_logged: set[str] = set()


def log_failure_once(what: str) -> None:
    """Log a tracing failure with its traceback the first time, at debug level after that."""
    if what in _failures_logged:
        _log.debug("choreoscope: %s", what, exc_info=True)
        return
    _failures_logged.add(what)
    _log.exception("choreoscope: %s (logged once; later ones at debug level)", what)


def _placement(outcome: Any) -> dict[str, Any]:
    """Where the broker put the record, from kafka-python's record metadata (nothing for an
    exception or anything else): `messaging.destination.partition.id` (a string, as the
    conventions say) and `messaging.kafka.offset`."""
    partition = getattr(outcome, "partition", None)
    if type(partition) is not int or partition < 0 or isinstance(outcome, BaseException):
        return {}
    offset = getattr(outcome, "offset", None)
    if type(offset) is not int or offset < 0:
        return {semconv.MESSAGING_DESTINATION_PARTITION_ID: str(partition)}
    return {semconv.MESSAGING_DESTINATION_PARTITION_ID: str(partition),
            semconv.MESSAGING_KAFKA_OFFSET: offset}
