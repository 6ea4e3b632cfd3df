"""`failed_handler` anomalies: a CONSUMER span that ended with status ERROR."""

from __future__ import annotations

from ..reconstruct.flows import Dag, Flow
from ._describe import label
from .anomaly import Anomaly

KIND = "failed_handler"


def detect(flow: Flow, dag: Dag) -> list[Anomaly]:
    """One anomaly per failed processing (span), naming service, group and error type."""
    found: list[Anomaly] = []
    for s in flow.spans:
        if s.kind != "consumer" or s.status != "error":
            continue
        e = dag.nodes.get(s.message_id) if s.message_id is not None else None
        what = label(e) if e is not None else (s.message_id or "an event")
        error = s.error_type or "error"
        if s.status_message:  # often "Type: message" already
            message = s.status_message
            error = message if message.startswith(f"{error}:") else f"{error}: {message}"
        found.append(Anomaly(
            kind=KIND, key=f"{s.trace_id}/{s.span_id}",
            detail=f"{s.service or '?'} (group {s.group or '?'}) failed handling {what}: {error}",
            correlation_id=flow.flow_id, event_id=s.message_id,
            subject=e.subject if e is not None else None, service=s.service, group=s.group,
            extra={"type": e.type if e is not None else None, "error_type": s.error_type,
                   "status_message": s.status_message, "trace_id": s.trace_id,
                   "span_id": s.span_id, "start_us": s.start_us},
            refresh=True))  # the handled event may be stored after its span
    return found
