"""The learned choreography graph: JSON for tools, Graphviz DOT for people."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import select

from ..store import Store
from ..store.schema import graph_edges

SERVICE = "service"
EVENT_TYPE = "event_type"
# The kinds of an edge's (source, target): emits run from a service to an event type,
# consumed_by from an event type to a service.
_ENDS = {"emits": (SERVICE, EVENT_TYPE), "consumed_by": (EVENT_TYPE, SERVICE)}


def graph(store: Store) -> dict[str, Any]:
    """`{nodes: [{id, kind}], edges: [{source, target, kind, count, p50_ms, p95_ms}]}`.

    Edges: service -emits-> event type, event type -consumed_by-> service. Nodes are sorted
    by (kind, id), edges by (source, target, kind).
    """
    stmt = select(graph_edges).order_by(graph_edges.c.source, graph_edges.c.target,
                                        graph_edges.c.kind)
    with store.engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    nodes: set[tuple[str, str]] = set()  # (kind, id): a service and a type may share a name
    edges = []
    for r in rows:
        nodes.update(zip(_ENDS[r["kind"]], (r["source"], r["target"]), strict=True))
        edges.append({
            "source": r["source"],
            "target": r["target"],
            "kind": r["kind"],
            "count": int(r["count"]),
            "p50_ms": r["p50_ms"],
            "p95_ms": r["p95_ms"],
            "anomaly_count": int(r["anomaly_count"] or 0),
        })
    return {"nodes": [{"id": n, "kind": k} for k, n in sorted(nodes)], "edges": edges}


def graph_dot(store_or_graph: Store | dict[str, Any]) -> str:
    """Graphviz DOT: services as boxes, event types as ellipses, each edge labelled with its
    count and p95; edges with anomalies drawn red and bold. A service and an event type of
    the same name are two nodes."""
    g = store_or_graph if isinstance(store_or_graph, dict) else graph(store_or_graph)
    lines = [
        "digraph choreography {",
        "  rankdir=TB;",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for n in g["nodes"]:
        shape = "box" if n["kind"] == SERVICE else "ellipse"
        lines.append(f"  {_node_id(n['id'], n['kind'])} [label={_quote(n['id'])}, shape={shape}];")
    for e in g["edges"]:
        label = f"{e['count']}"
        if e["p95_ms"] is not None:
            label += f", p95 {_ms(e['p95_ms'])}"
        attrs = [f"label={_quote(label)}"]
        if e.get("anomaly_count"):
            attrs.append(f"tooltip={_quote(str(e['anomaly_count']) + ' anomalies')}")
            attrs += ['color="red"', 'fontcolor="red"', "penwidth=2"]
        src_kind, dst_kind = _ENDS.get(e["kind"], (SERVICE, EVENT_TYPE))
        src = _node_id(e["source"], src_kind)
        dst = _node_id(e["target"], dst_kind)
        lines.append(f"  {src} -> {dst} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def components(g: dict[str, Any]) -> list[dict[str, Any]]:
    """`g` (the `graph` shape) split into its parts that no edge joins, the one of most
    edges first (then most nodes, then its first node's name): a map drawn part by part
    gives the main choreography the whole width, not a share beside unrelated services."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]  # path halving
            key = parent[key]
        return key

    for n in g["nodes"]:
        root((n["id"], n["kind"]))
    for e in g["edges"]:
        src_kind, dst_kind = _ENDS.get(e["kind"], (SERVICE, EVENT_TYPE))
        a, b = root((e["source"], src_kind)), root((e["target"], dst_kind))
        if a != b:
            parent[b] = a
    parts: dict[tuple[str, str], dict[str, Any]] = {}
    for n in g["nodes"]:
        parts.setdefault(root((n["id"], n["kind"])), {"nodes": [], "edges": []})[
            "nodes"].append(n)
    for e in g["edges"]:
        src_kind, _ = _ENDS.get(e["kind"], (SERVICE, EVENT_TYPE))
        parts.setdefault(root((e["source"], src_kind)), {"nodes": [], "edges": []})[
            "edges"].append(e)
    return sorted(parts.values(), key=lambda p: (-len(p["edges"]), -len(p["nodes"]),
                                                 p["nodes"][0]["id"] if p["nodes"] else ""))


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _node_id(name: str, kind: str) -> str:
    # Prefixed by kind, so a service and an event type of the same name stay two nodes.
    return _quote(f"{'svc' if kind == SERVICE else 'type'}:{name}")


def _quote(text: str) -> str:
    """A DOT double-quoted string: backslashes, quotes and line breaks escaped, and every
    other control character (an ANSI escape a terminal would act on) written as `\\uXXXX`
    text, so names stay apart and nothing reaches the terminal raw."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\r", "").replace("\n", "\\n"))
    escaped = "".join(f"\\\\u{ord(c):04x}" if unicodedata.category(c) in _CONTROL else c
                      for c in escaped)
    return f'"{escaped}"'


_CONTROL = ("Cc", "Cf")
