"""`duplicate` anomalies: one event id published at two offsets (`publish`), or processed
twice by one consumer group (`delivery`).

Flows are detected one at a time; copies of one event id that went out with different
correlation ids land in different flows, so `load_repeated` finds the ids stored more than
once and `detect_across_flows` reports each one found in several flows once, under the flow
of its first copy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any

from ..reconstruct.flows import Dag, Flow, bus_ms
from ..reconstruct.load import EVENT_COLUMNS, EventRow, stream
from ._describe import label, record_of
from .anomaly import Anomaly

KIND = "duplicate"


def detect(flow: Flow, dag: Dag) -> list[Anomaly]:
    """Publish duplicates by event id and delivery duplicates by (group, event id)."""
    found: list[Anomaly] = []
    records: dict[str, list] = {}
    if len(flow.events) > len(dag.nodes):  # some event id has several records
        for e in flow.events:
            if e.event_id is not None:
                records.setdefault(e.event_id, []).append(e)
    for event_id, copies in records.items():
        if len(copies) < 2:
            continue
        first = dag.nodes[event_id]
        found.append(Anomaly(
            kind=KIND, subkind="publish", key=f"publish:{event_id}",
            detail=f"{label(first)} was published {len(copies)} times",
            correlation_id=flow.flow_id, event_id=event_id, subject=first.subject,
            service=first.source,
            extra={"type": first.type, "records": [record_of(e) for e in copies]},
            refresh=True))  # a third copy makes it "3 times"
    processed: dict[tuple[str, str], list] = {}
    keys = [(s.group, s.message_id) for s in flow.spans
            if s.kind == "consumer" and s.group and s.message_id is not None]
    if len(set(keys)) < len(keys):  # some group processed some event more than once
        for s in flow.spans:
            if s.kind == "consumer" and s.group and s.message_id is not None:
                processed.setdefault((s.group, s.message_id), []).append(s)
    for (group, event_id), spans in sorted(processed.items()):
        if len(spans) < 2:
            continue
        handled = dag.nodes.get(event_id)
        what = label(handled) if handled is not None else event_id
        found.append(Anomaly(
            kind=KIND, subkind="delivery", key=f"delivery:{group}:{event_id}",
            detail=f"group {group} processed {what} {len(spans)} times",
            correlation_id=flow.flow_id, event_id=event_id,
            subject=handled.subject if handled is not None else None,
            service=next((s.service for s in spans if s.service), None), group=group,
            extra={"type": handled.type if handled is not None else None,
                   "processings": [{"trace_id": s.trace_id, "span_id": s.span_id,
                                    "start_us": s.start_us, "partition": s.partition,
                                    "offset": s.offset} for s in spans]},
            refresh=True))  # a later delivery, or the handled event stored after the spans
    return found


# Every record of the event ids stored more than once: counted from ix_events_event_id
# alone (the flows are compared in Python, on the few ids this finds).
REPEATED_SQL = f"""
SELECT {EVENT_COLUMNS}
FROM events
WHERE event_id IN (SELECT event_id FROM events WHERE event_id IS NOT NULL
                   GROUP BY event_id HAVING count(*) > 1)
ORDER BY event_id
"""


def load_repeated(raw: Any, dialect: str) -> Iterator[EventRow]:
    """The records of event ids stored more than once, grouped by event id."""
    for row in stream(raw, dialect, REPEATED_SQL, "cs_duplicates"):
        yield EventRow._make(row)


def detect_across_flows(records: Iterable[EventRow]) -> list[Anomaly]:
    """One `publish` anomaly per event id published under more than one correlation id
    (`records` grouped by event id, as `load_repeated` gives them)."""
    found: list[Anomaly] = []
    for event_id, group in groupby(records, key=lambda e: e.event_id):
        copies = sorted(group, key=lambda e: (bus_ms(e), e.topic, e.partition, e.offset))
        flows = list(dict.fromkeys(e.flow_id for e in copies))
        if len(flows) < 2:
            continue  # all in one flow: the flow's own detection reports them
        first = copies[0]
        found.append(Anomaly(
            kind=KIND, subkind="publish", key=f"publish_across_flows:{event_id}",
            detail=f"{label(first)} was published {len(copies)} times, in {len(flows)} flows: "
                   f"{', '.join(flows)}",
            correlation_id=first.flow_id, event_id=event_id, subject=first.subject,
            service=first.source,
            extra={"type": first.type, "flows": flows,
                   "records": [{**record_of(e), "flow_id": e.flow_id} for e in copies]},
            refresh=True))  # another copy, or another flow
    return found
