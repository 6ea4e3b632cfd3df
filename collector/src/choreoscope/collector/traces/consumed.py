"""The event a CONSUMER span processed, when the span does not name it.

Choreoscope's own consumer spans carry `messaging.message.id` (= ce_id). OpenTelemetry's own
Kafka instrumentation writes none: its `{topic} receive` span is known only as the child of
the producer span whose context the record carried, which is the `span_id` of the event's
`traceparent`. Such a span gets the id of that event as its `message_id`, so the graph,
latencies and flow detail count the service behind it as a consumer.

The event may be stored before or after the span: spans are named as they are written
(`name_on_write`), and each analysis pass names those written earlier whose event came
later (`name_pending`, over a partial index of the spans still unnamed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text

# How far back a pass looks for consumer spans still unnamed: a record reaches the bus before
# it is consumed, so its event is stored soon after its span at the latest.
PENDING_WINDOW_MS = 3_600_000
_IN_CHUNK = 500

_NAME_PENDING = text("""
UPDATE spans SET message_id = (
    SELECT min(e.event_id) FROM events e
    WHERE e.trace_id = spans.trace_id AND e.span_id = spans.parent_span_id)
WHERE kind = 'consumer' AND message_id IS NULL AND received_at_ms >= :since
  AND parent_span_id IS NOT NULL
  AND EXISTS (SELECT 1 FROM events e WHERE e.trace_id = spans.trace_id
              AND e.span_id = spans.parent_span_id AND e.event_id IS NOT NULL)
""")


def unnamed(row: dict[str, Any]) -> bool:
    """Whether a `spans` row is a CONSUMER span that names no event but has a parent."""
    return (row["kind"] == "consumer" and row["message_id"] is None
            and row["parent_span_id"] is not None)


def name_on_write(conn: Any, rows: Iterable[dict[str, Any]]) -> None:
    """Give each unnamed consumer row (`unnamed`) the id of the stored event whose producer
    span is its parent, in place; rows whose event is not stored yet stay as they are."""
    waiting: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if unnamed(row):
            waiting.setdefault((row["trace_id"], row["parent_span_id"]), []).append(row)
    if not waiting:
        return
    trace_ids = sorted({trace_id for trace_id, _ in waiting})
    for i in range(0, len(trace_ids), _IN_CHUNK):
        chunk = trace_ids[i:i + _IN_CHUNK]
        marks = ", ".join(f":t{n}" for n in range(len(chunk)))
        found = conn.execute(
            text("SELECT trace_id, span_id, min(event_id) FROM events "
                 f"WHERE trace_id IN ({marks}) AND span_id IS NOT NULL "
                 "AND event_id IS NOT NULL GROUP BY trace_id, span_id"),
            {f"t{n}": t for n, t in enumerate(chunk)})
        for trace_id, span_id, event_id in found:
            for row in waiting.get((trace_id, span_id), ()):
                row["message_id"] = event_id


def name_pending(conn: Any, now_ms: int) -> int:
    """Name the consumer spans received within `PENDING_WINDOW_MS` whose event was stored
    after them; returns how many were named."""
    result = conn.execute(_NAME_PENDING, {"since": now_ms - PENDING_WINDOW_MS})
    return max(0, int(result.rowcount or 0))
