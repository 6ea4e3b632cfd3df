"""The `Event`: one CloudEvent as Choreoscope's instrumentation and collector see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    """One event on the bus.

    The first ten fields are the envelope (DESIGN.md section 2); `topic`, `partition`,
    `offset` and `key` are filled for consumed events. `problems` lists what was wrong
    with the envelope when it was decoded (an empty list for a clean event); the event
    is kept whatever its problems.
    """

    id: str | None
    type: str | None
    source: str | None
    subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    schema_version: str | None = None
    time: str | None = None
    sequence: int | None = None
    data: Any = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    # Beyond the public envelope: how the event was carried and what was wrong with it.
    traceparent: str | None = None
    tracestate: str | None = None
    timestamp_ms: int | None = None
    """Broker timestamp of the record (milliseconds since the epoch), when consumed."""
    envelope: str = "binary"
    """How the envelope was carried: `binary`, `structured`, `json_envelope` or `unknown`."""
    problems: list[str] = field(default_factory=list)


def flow_of(event: Event) -> str | None:
    """The flow an event belongs to, as the collector keys it (DESIGN.md section 4): its
    correlation id, else the trace id of its traceparent, else its id, else (a record with
    no envelope at all) its `topic/partition/offset`. An event caused by this one takes it
    as its correlation id, so cause and effect share one flow."""
    tp = event.traceparent  # validated by the decoder, None when absent or malformed
    found = event.correlation_id or (tp[3:35] if tp else None) or event.id
    if found is None and event.topic is not None and event.offset is not None:
        return f"{event.topic}/{event.partition}/{event.offset}"
    return found
