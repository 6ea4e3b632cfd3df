"""Start a span whose attributes we built ourselves without the SDK re-checking each one.

The SDK's `Tracer.start_span(..., attributes=...)` copies the attributes into a
`BoundedAttributes`, running `_clean_attribute_value` on every value: about a third of the
cost of a send or process span with a dozen attributes. Our attribute values are str, int or
bool, which that cleaning returns unchanged, so when nothing can tell the difference
`SpanStarter` starts the span without attributes and puts them into its mapping in one step.
Nothing can tell the difference when

- the tracer is the SDK's `Tracer` (directly, or behind the API's `ProxyTracer` once a
  provider is installed);
- its sampler is one of the SDK's static ones (`ALWAYS_ON`, `ALWAYS_OFF`), alone or as the
  delegates of a `ParentBased` (the default, `ParentBased(ALWAYS_ON)`): they never look at
  the attributes, any other sampler is given them as before;
- every span processor's `on_start` is the SDK's no-op (`BatchSpanProcessor`,
  `SimpleSpanProcessor` and processors that do not override it), since `on_start` runs
  before the attributes are in;
- the new span is the SDK's, its attribute mapping a `BoundedAttributes` with no value length
  limit and room for all the attributes (the defaults: 128 attributes, no length limit).

In any other case the attributes go through the public API, the SDK's limits and cleaning
included. The result is checked by tests/instrumentation/test_fastspan.py: the same exported
spans both ways.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.trace import Link, Span, SpanKind

try:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import SpanProcessor, SynchronousMultiSpanProcessor
    from opentelemetry.sdk.trace import Tracer as SdkTracer
    from opentelemetry.sdk.trace import _Span as SdkSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler
except ImportError:  # an SDK without what we rely on: always the public path
    SdkTracer = None  # type: ignore[assignment,misc]
    _NOOP_ON_START: frozenset[Any] = frozenset()
else:
    _NOOP_ON_START = frozenset(
        (SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start)
    )

_PARENT_BASED_DELEGATES = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)


class SpanStarter:
    """`starter(name, parent, kind, attributes, links, later)`: `tracer.start_span`, attributes.

    `attributes` are given to `start_span`; `later` ones, if any, are set on the started span
    (the sampler does not see them). Values must be str, int, bool or tuples of str (not
    checked: the callers build them); the dicts are not kept.
    """

    __slots__ = ("_checked", "_tracer")

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        # What the last check looked at (tracer, sampler, processors) and what it found, in
        # one tuple so that threads never see the parts of two different checks.
        self._checked: tuple[Any, Any, Any, bool] | None = None

    @property
    def fast(self) -> bool:
        """The last check's answer: spans skip the per-value cleaning (False before the first)."""
        return self._checked is not None and self._checked[3]

    def __call__(
        self,
        name: str,
        parent: Context | None,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link] | None = None,
        later: Mapping[str, Any] | None = None,
    ) -> Span:
        tracer = self.sdk_tracer()
        if tracer is None:
            span: Any = self._resolved().start_span(name, parent, kind, attributes, links)
            if later and span.is_recording():
                span.set_attributes(later)
            return span
        if parent is None:  # looked up once here rather than three times in the SDK
            parent = get_current()
        span = tracer.start_span(name, parent, kind, None, links)
        fill_attributes(span, attributes, later)
        return span

    def sdk_tracer(self) -> Any:
        """The SDK `Tracer` behind ours when spans may take the fast path, else None."""
        tracer = self._resolved()
        if type(tracer) is not SdkTracer or not self._is_fast(tracer):
            return None
        return tracer

    def _resolved(self) -> Any:
        """Our tracer, or the real one behind the API's proxy once a provider is installed."""
        tracer: Any = self._tracer
        if type(tracer) is trace.ProxyTracer:
            tracer = getattr(tracer, "_real_tracer", None) or tracer
        return tracer

    def _is_fast(self, tracer: Any) -> bool:
        processor = tracer.span_processor
        processors = getattr(processor, "_span_processors", None)
        sampler = tracer.sampler
        checked = self._checked
        if (
            checked is not None
            and checked[0] is tracer
            and checked[1] is sampler
            and checked[2] is processors
        ):
            return checked[3]
        fast = (
            _ignores_attributes(sampler)
            and type(processor) is SynchronousMultiSpanProcessor
            and isinstance(processors, tuple)
            and all(getattr(type(p), "on_start", None) in _NOOP_ON_START for p in processors)
        )
        self._checked = (tracer, sampler, processors, fast)
        return fast


def fill_attributes(span: Any, attributes: Mapping[str, Any],
                    later: Mapping[str, Any] | None = None) -> None:
    """Put the attributes into a span the fast path started without them: straight into its
    mapping when that is the SDK's with no limit in the way, else through `set_attributes`
    (the SDK applies its limits). A span that is not the SDK's is not recording."""
    if type(span) is not SdkSpan:
        return
    bounded = span._attributes
    count = len(attributes) + (len(later) if later else 0)
    if (
        type(bounded) is BoundedAttributes
        and bounded.max_value_len is None
        and (bounded.maxlen is None or count <= bounded.maxlen)
        and not bounded._dict
    ):
        into = bounded._dict
        into.update(attributes)
        if later:
            into.update(later)
    else:  # limits set (or unknown internals): the SDK applies them
        span.set_attributes(attributes)
        if later:
            span.set_attributes(later)


def _ignores_attributes(sampler: Any) -> bool:
    """The SDK's static samplers, alone or as every delegate of a `ParentBased`."""
    if type(sampler) is StaticSampler:
        return True
    if type(sampler) is not ParentBased:
        return False
    return all(
        type(getattr(sampler, name, None)) is StaticSampler for name in _PARENT_BASED_DELEGATES
    )
