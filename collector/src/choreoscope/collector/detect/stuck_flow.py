"""`stuck_flow` anomalies: a flow whose causal DAG ends in an event of a type other flows
follow with another event, and in which nothing happened for the stuck-after time."""

from __future__ import annotations

from collections.abc import Sequence

from ..reconstruct.flows import FlowSummary
from .anomaly import Anomaly

KIND = "stuck_flow"


def detect(summary: FlowSummary, stuck: Sequence[tuple[str, str, str | None, str | None]],
           *, now_ms: int) -> list[Anomaly]:
    """One anomaly per flow and latest stuck leaf (`stuck` from `flows.stuck_leaves`)."""
    if not stuck:
        return []
    node, event_type, subject, source = stuck[-1]
    idle_s = (now_ms - summary.activity_ms) / 1000.0
    return [Anomaly(
        kind=KIND, key=f"{summary.flow_id}:{node}",
        detail=f"flow {summary.flow_id} waits after {event_type} {node}: nothing happened "
               f"for {idle_s:.0f}s",
        correlation_id=summary.flow_id, event_id=node, subject=subject, service=source,
        extra={"type": event_type, "idle_s": idle_s, "last_activity_ms": summary.activity_ms,
               "leaves": [{"event_id": n, "type": t} for n, t, _, _ in stuck]})]
