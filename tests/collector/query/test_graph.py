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


def test_graph_dot_writes_control_characters_as_text() -> None:
    """An event type carrying a terminal escape (`ESC ] 0 ; … BEL` retitles the window) is
    printed as `\\u001b` text: no control byte reaches the terminal, and two names that
    differ only there stay two nodes."""
    g = {"nodes": [{"id": "evil\x1b]0;pwned\x07.happened", "kind": "event_type"},
                   {"id": "evil\u200e.happened", "kind": "event_type"}], "edges": []}
    dot = graph_dot(g)
    assert not any(ord(c) < 32 and c != "\n" for c in dot)
    assert "\u200e" not in dot
    assert '"type:evil\\\\u001b]0;pwned\\\\u0007.happened"' in dot
    assert '"type:evil\\\\u200e.happened"' in dot


def test_graph_empty() -> None:
    """No edges gives an empty graph and a valid, empty digraph."""
    g = {"nodes": [], "edges": []}
    assert graph_dot(g).startswith("digraph choreography {") and graph_dot(g).endswith("}\n")


def test_a_service_and_an_event_type_of_one_name_are_two_nodes(tmp_path) -> None:
    """Source `x.done` emits `y.happened`, and `collide` emits an event of type `x.done`: two
    nodes named x.done, a box and an ellipse, and each DOT edge between the right ones."""
    from choreoscope.collector.store.schema import graph_edges

    store = Store(f"sqlite:///{tmp_path / 's.db'}").create()
    edge = {"count": 1, "p50_ms": None, "p95_ms": None, "anomaly_count": 0}
    with store.engine.begin() as conn:
        conn.execute(graph_edges.insert(), [
            {"source": "collide", "target": "x.done", "kind": "emits", **edge},
            {"source": "x.done", "target": "y.happened", "kind": "emits", **edge},
            {"source": "x.done", "target": "audit", "kind": "consumed_by", **edge},
        ])
    g = graph(store)
    assert g["nodes"] == [
        {"id": "x.done", "kind": "event_type"}, {"id": "y.happened", "kind": "event_type"},
        {"id": "audit", "kind": "service"}, {"id": "collide", "kind": "service"},
        {"id": "x.done", "kind": "service"}]
    edges = [line.split(" [")[0].strip() for line in graph_dot(g).splitlines() if "->" in line]
    assert edges == ['"svc:collide" -> "type:x.done"', '"type:x.done" -> "svc:audit"',
                     '"svc:x.done" -> "type:y.happened"']
    store.dispose()


def test_components_split_the_map_into_parts_no_edge_joins() -> None:
    """The main choreography first, then the rest; a service and an event type of one name
    are two nodes, so a name they share joins nothing."""
    from choreoscope.collector.query.graph import components

    def edge(source: str, kind: str, target: str) -> dict[str, object]:
        return {"source": source, "target": target, "kind": kind, "count": 1,
                "p50_ms": None, "p95_ms": None}

    g = {"nodes": [{"id": "legacy", "kind": "service"}, {"id": "Price", "kind": "event_type"},
                   {"id": "orders", "kind": "service"}, {"id": "placed", "kind": "event_type"},
                   {"id": "pay", "kind": "service"}, {"id": "paid", "kind": "event_type"},
                   {"id": "paid", "kind": "service"}, {"id": "lonely", "kind": "service"}],
         "edges": [edge("legacy", "emits", "Price"), edge("orders", "emits", "placed"),
                   edge("placed", "consumed_by", "pay"), edge("pay", "emits", "paid")]}
    parts = components(g)
    assert [[n["id"] for n in p["nodes"]] for p in parts] == [
        ["orders", "placed", "pay", "paid"], ["legacy", "Price"], ["lonely"], ["paid"]]
    assert [len(p["edges"]) for p in parts] == [3, 1, 0, 0]
    assert components({"nodes": [], "edges": []}) == []
