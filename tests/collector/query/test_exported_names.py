"""The query layer's public names (internals may move freely)."""

from __future__ import annotations


def test_exported_names() -> None:
    """The query layer's public surface is exactly these names."""
    import choreoscope.collector.query as query

    assert sorted(query.__all__) == [
        "FLOW_STATUSES", "causal_order", "count_anomalies_by_kind", "count_flows_by_status",
        "count_variants", "events_per_minute", "get_flow", "graph", "graph_dot",
        "list_anomalies", "list_flows", "outbox_status", "resolve_flow_id", "search_flows"]
    assert all(hasattr(query, name) for name in query.__all__)
