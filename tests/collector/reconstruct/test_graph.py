"""The choreography graph: emits edges by distinct event, consumed_by edges with latency."""

from __future__ import annotations

import pytest

from choreoscope.collector.reconstruct.graph import GraphBuilder, percentile
from tests.collector.reconstruct.factory import T0, consumer, ev, load_flows, new_store, put


def test_percentile_interpolates_between_ranks():
    """p50 and p95 of 1..100 and the edge cases of one and no value."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert percentile(values, 95) == 95.05
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_edges_count_distinct_events_and_processings(tmp_path):
    """A duplicate publish adds no emits count; each processing adds a consumed_by count."""
    store = new_store(tmp_path)
    rows, spans = [], []
    for i in range(4):
        e = ev(f"e{i}", "order.placed", flow=f"f{i}", offset=i, ts=T0 + 100 * i)
        rows.append(e)
        spans.append(consumer(e, "payments", start_ms=T0 + 100 * i + 10 * (i + 1)))
    rows.append(ev("e0", "order.placed", flow="f0", offset=9, ts=T0 + 5))  # duplicate publish
    put(store, rows, spans)
    graph = GraphBuilder()
    for flow, dag in load_flows(store).values():
        graph.add(flow, dag)
    assert graph.rows({("order.placed", "payments", "consumed_by"): 2}) == [
        {"source": "orders", "target": "order.placed", "kind": "emits", "count": 4,
         "p50_ms": None, "p95_ms": None, "anomaly_count": 0},
        {"source": "order.placed", "target": "payments", "kind": "consumed_by", "count": 4,
         "p50_ms": 25.0, "p95_ms": 38.5, "anomaly_count": 2},
    ]


def test_flows_without_traces_show_consumers_through_causation(tmp_path):
    """Without CONSUMER spans, the service that emitted an effect consumed its cause: counted
    once per (cause, service), no latency. A traced flow adds only what its spans show."""
    store = new_store(tmp_path)
    rows = [
        # f0, no spans: payments emitted two effects of e0 (counted once), shipping one of p0
        ev("e0", "order.placed", flow="f0", offset=0, traced=False),
        ev("p0", "payment.authorized", flow="f0", topic="payments", source="payments",
           cause="e0", traced=False),
        ev("p0b", "payment.audited", flow="f0", topic="payments", offset=1, source="payments",
           cause="e0", traced=False),
        ev("s0", "shipment.scheduled", flow="f0", topic="shipping", source="shipping",
           cause="p0", traced=False),
        ev("x0", "thing.happened", flow="f0", topic="shipping", offset=1, source=None,
           cause="s0", traced=False),  # no source: nobody to credit
        # f1, traced: the span says "payments" processed e1; the effect's source says nothing more
        ev("e1", "order.placed", flow="f1", offset=1),
        ev("p1", "payment.authorized", flow="f1", topic="payments", offset=2, source="pay-svc",
           cause="e1"),
    ]
    put(store, rows, [consumer(rows[5], "payments", start_ms=T0 + 30)])
    graph = GraphBuilder()
    for flow, dag in load_flows(store).values():
        graph.add(flow, dag)
    assert [(r["source"], r["target"], r["count"], r["p50_ms"])
            for r in graph.rows() if r["kind"] == "consumed_by"] == [
        ("order.placed", "payments", 2, 30.0),
        ("payment.authorized", "shipping", 1, None),
    ]


def test_emits_edges_carry_the_services_reaction_time(tmp_path):
    """An effect's emits latency runs from its service's processing of the cause (not a
    redelivery that started after the publish) to the effect's publish; root events and
    effects of a service with no span for the cause add none, yet count."""
    store = new_store(tmp_path)
    rows, spans = [], []
    for i, react in enumerate((4, 8, 12)):
        e = ev(f"e{i}", "order.placed", flow=f"f{i}", offset=i, ts=T0 + 100 * i)
        p = ev(f"p{i}", "payment.authorized", flow=f"f{i}", topic="payments", offset=i,
               source="payments", cause=f"e{i}", ts=T0 + 100 * i + 2 + react)
        rows += [e, p]
        spans.append(consumer(e, "payments", start_ms=T0 + 100 * i + 2))
    spans.append(consumer(rows[0], "payments", start_ms=T0 + 50, span_id="a" * 16))  # redelivery
    rows.append(ev("x0", "payment.audited", flow="f0", topic="payments", offset=9,
                   source="audit", cause="e0", ts=T0 + 30))  # audit processed nothing we saw
    put(store, rows, spans)
    graph = GraphBuilder()
    for flow, dag in load_flows(store).values():
        graph.add(flow, dag)
    assert [(r["source"], r["target"], r["count"], r["p50_ms"], r["p95_ms"])
            for r in graph.rows() if r["kind"] == "emits"] == [
        ("audit", "payment.audited", 1, None, None),
        ("orders", "order.placed", 3, None, None),
        ("payments", "payment.authorized", 3, 8.0, 11.6),
    ]


def test_a_retry_that_published_the_effect_is_where_the_reaction_starts(tmp_path):
    """payments processed the order and published nothing (the flow went stuck), then
    processed it again ten minutes later and published within 3 ms: its reaction is 3 ms, not
    ten minutes. A service whose clock is behind, every processing after the publish, reacts
    from its first processing."""
    store = new_store(tmp_path)
    e = ev("e0", "order.placed", flow="f0", ts=T0)
    p = ev("p0", "payment.failed", flow="f0", topic="payments", source="payments", cause="e0",
           ts=T0 + 600_003)
    e1 = ev("e1", "order.placed", flow="f1", offset=1, ts=T0)
    p1 = ev("p1", "payment.failed", flow="f1", topic="payments", offset=1, source="payments",
            cause="e1", ts=T0 + 5)
    put(store, [e, p, e1, p1], [
        consumer(e, "payments", start_ms=T0 + 2),
        consumer(e, "payments", start_ms=T0 + 600_000, span_id="a" * 16),
        consumer(e, "payments", start_ms=T0 + 900_000, span_id="b" * 16),  # after: not it
        consumer(e1, "payments", start_ms=T0 + 9),
        consumer(e1, "payments", start_ms=T0 + 20, span_id="c" * 16)])
    graph = GraphBuilder()
    for flow, dag in load_flows(store).values():
        graph.add(flow, dag)
    [edge] = [r for r in graph.rows() if r["kind"] == "emits" and r["source"] == "payments"]
    # reactions 3 ms (f0, from the retry) and -4 ms (f1, from its first processing)
    assert (edge["target"], edge["count"], edge["p50_ms"]) == ("payment.failed", 2, -0.5)
    assert edge["p95_ms"] == pytest.approx(-4 + 7 * 0.95)


def test_a_sub_millisecond_reaction_is_never_negative(tmp_path):
    """The effect's publish time is a broker timestamp in whole milliseconds: a handler that
    starts 0.7 ms into a millisecond and publishes 0.2 ms later (broker timestamp: that same
    millisecond) reacted in 0 ms, not -0.7 ms; one that publishes in the next millisecond in 1."""
    store = new_store(tmp_path)
    rows, spans = [], []
    for i, published in enumerate((T0 + 2, T0 + 3)):
        e = ev(f"e{i}", "order.placed", flow=f"f{i}", offset=i, ts=T0)
        p = ev(f"p{i}", "payment.authorized", flow=f"f{i}", topic="payments", offset=i,
               source="payments", cause=f"e{i}", ts=published)
        rows += [e, p]
        span = consumer(e, "payments", start_ms=T0 + 2)
        span["start_us"] += 700
        spans.append(span)
    put(store, rows, spans)
    graph = GraphBuilder()
    for flow, dag in load_flows(store).values():
        graph.add(flow, dag)
    assert [(r["target"], r["p50_ms"], r["p95_ms"])
            for r in graph.rows() if r["kind"] == "emits" and r["source"] == "payments"] == [
        ("payment.authorized", 0.5, 0.95)]


def test_the_receive_span_of_opentelemetrys_own_instrumentation_is_not_a_second_processing(
        tmp_path):
    """A service running OpenTelemetry's KafkaInstrumentor beside our traced_consumer leaves
    two CONSUMER spans per record: its `receive` span (no group, named by its parent) and our
    processing span. One processing is counted; a service with only the receive span (no
    wrapper of ours) is still a consumer."""
    store = new_store(tmp_path)
    rows, spans = [], []
    for i in range(3):
        e = ev(f"e{i}", "widget.made", flow=f"f{i}", offset=i, ts=T0 + 100 * i)
        rows.append(e)
        ours = consumer(e, "svcx", start_ms=T0 + 100 * i + 20)
        receive = consumer(e, "svcx", start_ms=T0 + 100 * i + 10, span_id=f"{i + 1:016x}")
        receive.update(consumer_group=None, conversation_id=None, name="widgets receive")
        elsewhere = consumer(e, "audit", start_ms=T0 + 100 * i + 30, span_id=f"{i + 9:016x}")
        elsewhere.update(consumer_group=None, conversation_id=None, name="widgets receive")
        spans += [ours, receive, elsewhere]
    put(store, rows, spans)
    graph = GraphBuilder()
    for flow, dag in load_flows(store).values():
        graph.add(flow, dag)
    assert [(r["source"], r["target"], r["count"], r["p50_ms"]) for r in graph.rows({})
            if r["kind"] == "consumed_by"] == [("widget.made", "audit", 3, 30.0),
                                               ("widget.made", "svcx", 3, 20.0)]
