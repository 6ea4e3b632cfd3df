"""Stream the store's rows as compact tuples, in the orders reconstruction needs.

Reads go through the raw DB-API cursor (server-side on PostgreSQL), so a million events never
sit in memory at once and no per-row objects beyond one tuple are built.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple


class EventRow(NamedTuple):
    """One stored record, with what the spans and trace fetches say about it."""

    flow_id: str
    event_id: str | None
    type: str | None
    source: str | None
    subject: str | None
    causation_id: str | None
    time_ms: int | None
    sequence: int | None
    trace_id: str | None
    broker_ts_ms: int | None
    observed_at_ms: int
    topic: str
    partition: int
    offset: int
    problems: str | None  # JSON list
    span_cause: str | None  # cause found through span parents when causation_id is missing
    traced: int  # 1 when some span of trace_id is stored
    fetch_status: str | None  # trace_fetches.status of trace_id


class SpanRow(NamedTuple):
    """One stored span, with the flow it joins (message id, else conversation id, else trace)."""

    flow_id: str
    trace_id: str
    span_id: str
    kind: str
    service: str | None
    group: str | None
    message_id: str | None
    start_us: int
    duration_us: int
    status: str
    error_type: str | None
    status_message: str | None
    destination: str | None
    partition: int | None
    offset: int | None


EVENTS_SQL = """
SELECT e.flow_id, e.event_id, e.type, e.source, e.subject, e.causation_id, e.time_ms,
       e.sequence, e.trace_id, e.broker_ts_ms, e.observed_at_ms, e.topic, e."partition",
       e."offset", e.problems,
       CASE WHEN e.causation_id IS NULL AND e.span_id IS NOT NULL THEN (
           SELECT COALESCE(CASE WHEN c.kind = 'consumer' THEN c.message_id END,
                           CASE WHEN g.kind = 'consumer' THEN g.message_id END)
           FROM spans p
           LEFT JOIN spans c ON c.trace_id = p.trace_id AND c.span_id = p.parent_span_id
           LEFT JOIN spans g ON g.trace_id = c.trace_id AND g.span_id = c.parent_span_id
           WHERE p.trace_id = e.trace_id AND p.span_id = e.span_id) END,
       CASE WHEN e.trace_id IS NOT NULL AND EXISTS (
           SELECT 1 FROM spans s WHERE s.trace_id = e.trace_id) THEN 1 ELSE 0 END,
       f.status
FROM events e LEFT JOIN trace_fetches f ON f.trace_id = e.trace_id
ORDER BY e.flow_id {collate}, e.topic, e."partition", e."offset"
"""

SPANS_SQL = """
SELECT * FROM (
  SELECT COALESCE(
           (SELECT e.flow_id FROM events e WHERE e.event_id = s.message_id LIMIT 1),
           s.conversation_id,
           (SELECT e.flow_id FROM events e WHERE e.trace_id = s.trace_id LIMIT 1)) AS flow,
         s.trace_id, s.span_id, s.kind, s.service, s.consumer_group, s.message_id, s.start_us,
         s.duration_us, s.status, s.error_type, s.status_message, s.destination,
         s."partition", s."offset"
  FROM spans s) x
WHERE x.flow IS NOT NULL
ORDER BY x.flow {collate}, x.start_us, x.span_id
"""


def collate(dialect: str) -> str:
    """The collation that orders text like Python does (code points, i.e. UTF-8 bytes)."""
    return 'COLLATE "C"' if dialect == "postgresql" else "COLLATE BINARY"


@contextmanager
def raw_connection(store: Any) -> Iterator[Any]:
    """A DB-API connection of the store's engine, rolled back and returned to the pool after."""
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        try:
            yield raw
        finally:
            conn.rollback()


def stream(raw: Any, dialect: str, sql: str, name: str, size: int = 5000) -> Iterator[tuple]:
    """Rows of `sql` one by one, fetched in batches (a server-side cursor on PostgreSQL)."""
    if dialect == "postgresql":
        cur = raw.cursor(name=name)
        cur.itersize = size
    else:
        cur = raw.cursor()
        cur.arraysize = size
    try:
        cur.execute(sql)
        while True:
            batch = cur.fetchmany(size)
            if not batch:
                return
            yield from batch
    finally:
        cur.close()


def events_by_flow(raw: Any, dialect: str) -> Iterator[EventRow]:
    """Every stored event, ordered by flow id (Python string order), then by bus position."""
    make = EventRow._make
    for row in stream(raw, dialect, EVENTS_SQL.format(collate=collate(dialect)), "cs_events"):
        yield make(row)


def spans_by_flow(raw: Any, dialect: str) -> Iterator[SpanRow]:
    """Every stored span that joins a flow, ordered by flow id, then start time."""
    make = SpanRow._make
    for row in stream(raw, dialect, SPANS_SQL.format(collate=collate(dialect)), "cs_spans"):
        yield make(row)
