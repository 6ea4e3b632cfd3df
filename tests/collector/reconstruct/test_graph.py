"""The choreography graph: emits edges by distinct event, consumed_by edges with latency."""

from __future__ import annotations

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
