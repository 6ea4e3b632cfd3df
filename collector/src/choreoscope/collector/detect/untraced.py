"""`untraced` anomalies: events without valid trace context (`no_trace_context`), and, when
tracing is in use, events whose trace never appeared after the grace time (`trace_missing`),
or whose trace did but not the span their traceparent names, the producer's (`span_missing`:
spans lost on the way, e.g. exported while no collector was listening, so a failed handler
among them would go unseen too).

Never before the grace time, and not while Jaeger's answer is unknown (no fetch yet, or the
fetch failed): a trace is missing when no span of it joined the flow and, with Jaeger, the
fetcher looked and found nothing (trace_fetches status `missing`). Never for an event whose
traceparent says it was not sampled: its producer chose not to record the trace.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..reconstruct.flows import Dag, Flow, unsampled
from ._describe import label
from .anomaly import Anomaly

KIND = "untraced"


def detect(flow: Flow, dag: Dag, *, tracing_active: bool, jaeger_enabled: bool,
           grace_s: float, now_ms: int, fetches: Mapping[str, str] | None = None
           ) -> list[Anomaly]:
    """One anomaly per distinct event of the flow that is untraced.

    A trace is present when a span of it joined the flow; `fetches` maps trace ids to the
    status of their Jaeger fetch when it is not `found`.
    """
    found: list[Anomaly] = []
    grace_ms = grace_s * 1000.0
    fetches = fetches or {}
    present: set[str] | None = None
    span_ids: set[str] | None = None
    for n, e in dag.nodes.items():
        if e.trace_id is None:
            found.append(Anomaly(
                kind=KIND, subkind="no_trace_context", key=f"no_trace_context:{n}",
                detail=f"{label(e)} carries no valid trace context",
                correlation_id=flow.flow_id, event_id=e.event_id, subject=e.subject,
                service=e.source, extra={"type": e.type}))
            continue
        if not tracing_active or now_ms - e.observed_at_ms < grace_ms or unsampled(e):
            continue
        if present is None:
            present = flow.span_traces
        if e.trace_id in present:
            if e.span_id is None:
                continue
            if span_ids is None:
                span_ids = {s.span_id for s in flow.spans}
            if e.span_id not in span_ids:
                found.append(Anomaly(
                    kind=KIND, subkind="span_missing", key=f"span_missing:{n}",
                    detail=f"span {e.span_id} of {label(e)}, named by its traceparent, never "
                           f"appeared, though trace {e.trace_id} did",
                    correlation_id=flow.flow_id, event_id=e.event_id, subject=e.subject,
                    service=e.source,
                    extra={"type": e.type, "trace_id": e.trace_id, "span_id": e.span_id}))
            continue
        status = fetches.get(e.trace_id)
        if jaeger_enabled and status != "missing":
            continue
        found.append(Anomaly(
            kind=KIND, subkind="trace_missing", key=f"trace_missing:{n}",
            detail=f"trace {e.trace_id} of {label(e)} never appeared",
            correlation_id=flow.flow_id, event_id=e.event_id, subject=e.subject,
            service=e.source,
            extra={"type": e.type, "trace_id": e.trace_id, "fetch_status": status}))
    return found
