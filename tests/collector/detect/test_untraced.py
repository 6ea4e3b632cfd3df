"""Untraced: no trace context at all, or a trace (or the span an event names in it) that never
appeared after the grace time, unless the event says it was not sampled."""

from __future__ import annotations

from choreoscope.collector.detect import untraced
from choreoscope.collector.reconstruct.load import raw_connection, unfound_trace_fetches
from tests.collector.reconstruct.factory import (
    T0,
    consumer,
    ev,
    fetch,
    load_flows,
    new_store,
    producer,
    put,
)


def _untraced(store, *, now_ms, tracing_active=True, jaeger_enabled=False, grace_s=120.0):
    with raw_connection(store) as raw:
        fetches = unfound_trace_fetches(raw, store.dialect)
    return [a for flow, dag in load_flows(store).values()
            for a in untraced.detect(flow, dag, tracing_active=tracing_active,
                                     jaeger_enabled=jaeger_enabled, grace_s=grace_s,
                                     now_ms=now_ms, fetches=fetches)]


def test_event_without_trace_context(tmp_path):
    """An event with no traceparent is untraced at once, even before the grace time."""
    store = new_store(tmp_path)
    put(store, [ev("e1", "order.placed", flow="f1", subject="ord_1", traced=False)])
    [a] = _untraced(store, now_ms=T0, tracing_active=False)
    assert (a.kind, a.subkind, a.key, a.event_id, a.subject, a.service, a.correlation_id) == (
        "untraced", "no_trace_context", "no_trace_context:e1", "e1", "ord_1", "orders", "f1")


def test_trace_missing_only_after_grace(tmp_path):
    """A trace with no span is missing 120 s after observation, never before."""
    store = new_store(tmp_path)
    e = ev("e1", "order.placed", flow="f1", observed=T0)
    put(store, [e])
    assert _untraced(store, now_ms=T0 + 119_999) == []
    [a] = _untraced(store, now_ms=T0 + 120_000)
    assert (a.subkind, a.key, a.extra["trace_id"]) == ("trace_missing", "trace_missing:e1",
                                                       e["trace_id"])
    assert _untraced(store, now_ms=T0 + 10**9, tracing_active=False) == []


def test_trace_with_spans_is_traced(tmp_path):
    """Once any span of the trace is stored the event is traced."""
    store = new_store(tmp_path)
    e = ev("e1", "order.placed", flow="f1", observed=T0)
    put(store, [e], [producer(e)])
    assert _untraced(store, now_ms=T0 + 10**9, jaeger_enabled=True) == []


def test_a_span_missing_from_a_trace_that_arrived(tmp_path):
    """Spans of the trace arrived but not the producer span the event's traceparent names
    (lost while no collector listened): `span_missing`, after the grace time only."""
    store = new_store(tmp_path)
    placed = ev("e1", "order.placed", flow="f1", observed=T0)
    paid = ev("e2", "payment.captured", flow="f1", cause="e1", offset=1, observed=T0)
    # e1's producer span and the consumer of e2 arrived; e2's producer span did not
    put(store, [placed, paid], [producer(placed), consumer(paid, "shipping", start_ms=T0 + 5)])
    assert _untraced(store, now_ms=T0 + 119_999) == []
    [a] = _untraced(store, now_ms=T0 + 120_000)
    assert (a.subkind, a.key, a.event_id, a.correlation_id) == (
        "span_missing", "span_missing:e2", "e2", "f1")
    assert a.detail == (f"span {paid['span_id']} of payment.captured e2, named by its "
                        f"traceparent, never appeared, though trace {paid['trace_id']} did")
    assert a.extra == {"type": "payment.captured", "trace_id": paid["trace_id"],
                       "span_id": paid["span_id"]}


def test_with_jaeger_only_a_finished_fetch_counts(tmp_path):
    """With Jaeger, a trace is missing only when the fetcher found nothing: not on error, not
    before any fetch, not when found."""
    store = new_store(tmp_path)
    e1 = ev("e1", "order.placed", flow="f1", observed=T0)
    e2 = ev("e2", "order.placed", flow="f2", offset=1, observed=T0)
    e3 = ev("e3", "order.placed", flow="f3", offset=2, observed=T0)
    e4 = ev("e4", "order.placed", flow="f4", offset=3, observed=T0)
    put(store, [e1, e2, e3, e4], fetches=[fetch(e1["trace_id"], "missing"),
                                          fetch(e2["trace_id"], "error"),
                                          fetch(e4["trace_id"], "found")])
    found = _untraced(store, now_ms=T0 + 10**9, jaeger_enabled=True)
    assert [a.key for a in found] == ["trace_missing:e1"]


def test_clean_traffic_is_traced(clean_run):
    """1,000 clean flows with their spans give no untraced anomaly."""
    store, _ = clean_run
    assert _untraced(store, now_ms=T0 + 10**9, jaeger_enabled=False) == []


def test_an_unsampled_event_is_never_untraced(tmp_path):
    """A traceparent whose sampled flag is off says its producer recorded no span: neither its
    trace nor its span is ever missing. The sampled event beside it still is."""
    store = new_store(tmp_path)
    skipped = ev("e1", "order.placed", flow="f1", observed=T0, sampled=False)
    recorded = ev("e2", "order.placed", flow="f2", offset=1, observed=T0)
    put(store, [skipped, recorded])
    assert [a.key for a in _untraced(store, now_ms=T0 + 10**9)] == ["trace_missing:e2"]
    # a trace that did arrive, without the unsampled event's span
    paid = ev("e3", "payment.captured", flow="f3", offset=2, observed=T0, sampled=False)
    shipped = ev("e4", "order.shipped", flow="f3", cause="e3", offset=3, observed=T0)
    put(store, [paid, shipped], [producer(shipped)])
    assert [a.key for a in _untraced(store, now_ms=T0 + 10**9)] == ["trace_missing:e2"]


def test_a_producer_span_naming_no_event_joins_the_flow_of_the_event_it_sent(tmp_path):
    """A trace shared by two flows (a handler that set another correlation id): the producer
    span OpenTelemetry's own instrumentation wrote (no message id, no conversation id) joins
    the flow of the event whose traceparent names it, not any flow of its trace, so that
    event's span is not missing."""
    store = new_store(tmp_path)
    first = ev("e1", "order.placed", flow="a", observed=T0)
    second = ev("e2", "audit.logged", flow="b", offset=1, observed=T0)
    second["trace_id"] = first["trace_id"]
    spans = [producer(first), producer(second)]
    for span in spans:
        span.update(message_id=None, conversation_id=None)
    put(store, [first, second], spans)
    flows = load_flows(store)
    assert [s.span_id for s in flows["b"][0].spans] == [second["span_id"]]
    assert _untraced(store, now_ms=T0 + 10**9) == []
