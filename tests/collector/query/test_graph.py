"""The choreography graph as JSON and as Graphviz DOT."""

from __future__ import annotations

from choreoscope.collector.query import graph, graph_dot
from choreoscope.collector.store import Store
from tests.collector.query import expected


def test_graph_exact(store: Store) -> None:
    """Nodes by (kind, id), edges by (source, target, kind), with counts and percentiles."""
    assert graph(store) == expected.GRAPH


def test_graph_dot_exact(store: Store) -> None:
    """Services are boxes, event types ellipses, labels carry count and p95, anomalies are red."""
    assert graph_dot(store) == expected.DOT
    assert graph_dot(graph(store)) == expected.DOT


def test_graph_dot_escapes_names() -> None:
    """Quotes, backslashes and line breaks in names cannot break out of DOT strings."""
    g = {"nodes": [{"id": 'evil"]; x -> y; "\\', "kind": "service"},
                   {"id": "a\nb", "kind": "event_type"}],
         "edges": [{"source": 'evil"]; x -> y; "\\', "target": "a\nb", "kind": "emits",
                    "count": 1, "p50_ms": None, "p95_ms": 3.25}]}
    dot = graph_dot(g)
    assert '"svc:evil\\"]; x -> y; \\"\\\\" [label="evil\\"]; x -> y; \\"\\\\", shape=box];' in dot
    assert '"type:a\\nb" [label="a\\nb", shape=ellipse];' in dot
    assert '-> "type:a\\nb" [label="1, p95 3.2 ms"];' in dot
    assert dot.count("\n") == 8


def test_graph_empty() -> None:
    """No edges gives an empty graph and a valid, empty digraph."""
    g = {"nodes": [], "edges": []}
    assert graph_dot(g).startswith("digraph choreography {") and graph_dot(g).endswith("}\n")
