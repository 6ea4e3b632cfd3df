"""Small helpers the detectors share to describe events in an anomaly's `extra`."""

from __future__ import annotations

from typing import Any

from ..reconstruct.load import EventRow


def record_of(e: EventRow) -> dict[str, Any]:
    """An event as the dashboard shows it: id, type, times and bus position."""
    return {
        "event_id": e.event_id,
        "type": e.type,
        "time_ms": e.time_ms,
        "broker_ts_ms": e.broker_ts_ms,
        "topic": e.topic,
        "partition": e.partition,
        "offset": e.offset,
    }


def label(e: EventRow) -> str:
    """`type id` for details."""
    return f"{e.type or '?'} {e.event_id or f'{e.topic}/{e.partition}/{e.offset}'}"
