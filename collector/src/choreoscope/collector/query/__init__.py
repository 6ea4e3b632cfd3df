"""The query layer: read the store, return the JSON shapes of DESIGN.md section 6.

The `choreoscope` query commands and the dashboard both use it, so they always agree. Every
function takes a `Store`, reads only, binds every filter as a parameter, and aggregates in SQL.
"""

from .anomalies import count_anomalies_by_kind, list_anomalies
from .flows import (
    FLOW_STATUSES,
    causal_order,
    count_flows_by_status,
    count_variants,
    events_per_minute,
    get_flow,
    list_flows,
    resolve_flow_id,
    search_flows,
)
from .graph import graph, graph_dot
from .outbox import outbox_status

__all__ = [
    "FLOW_STATUSES",
    "causal_order",
    "count_anomalies_by_kind",
    "count_flows_by_status",
    "count_variants",
    "events_per_minute",
    "get_flow",
    "graph",
    "graph_dot",
    "list_anomalies",
    "list_flows",
    "outbox_status",
    "resolve_flow_id",
    "search_flows",
]
