"""`envelope` anomalies: one per stored record and problem code found while decoding it."""

from __future__ import annotations

import json

from ..reconstruct.flows import Flow
from .anomaly import Anomaly

KIND = "envelope"


def problem_codes(problems: str | None) -> list[tuple[str, str]]:
    """(code, problem) pairs of an `events.problems` JSON list; unreadable text is one problem."""
    if not problems:
        return []
    try:
        items = json.loads(problems)
    except ValueError:
        items = [problems]
    if not isinstance(items, list):
        items = [items]
    out: list[tuple[str, str]] = []
    for item in items:
        text = str(item)
        code = text.split(":", 1)[0].strip() or "unknown"
        if all(code != c for c, _ in out):
            out.append((code, text))
    return out


def detect(flow: Flow) -> list[Anomaly]:
    """Envelope problems of every record of the flow."""
    found: list[Anomaly] = []
    for e in flow.events:
        if not e.problems:
            continue
        where = f"{e.topic}/{e.partition}/{e.offset}"
        for code, text in problem_codes(e.problems):
            found.append(Anomaly(
                kind=KIND, subkind=code, key=f"{where}:{code}",
                detail=f"{where}: {text}", correlation_id=flow.flow_id,
                event_id=e.event_id, subject=e.subject, service=e.source,
                extra={"type": e.type, "topic": e.topic, "partition": e.partition,
                       "offset": e.offset}))
    return found
