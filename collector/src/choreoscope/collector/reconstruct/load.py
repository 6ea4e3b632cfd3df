"""Stream the store's rows as compact tuples, in the orders reconstruction needs.

Reads go through the raw DB-API cursor (server-side on PostgreSQL), so a million events never
sit in memory at once and no per-row objects beyond one tuple are built.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

log = logging.getLogger(__name__)


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
    span_id: str | None  # the producer span named by the traceparent
    broker_ts_ms: int | None
    observed_at_ms: int
    topic: str
    partition: int
    offset: int
    problems: str | None  # JSON list
    trace_sampled: bool | None = None  # the traceparent's sampled flag (None: no context)


class SpanRow(NamedTuple):
    """One stored span, with the flow it joins (message id, else conversation id, else trace)."""

    flow_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
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


# The `events` columns of an EventRow, in its order.
EVENT_COLUMNS = """flow_id, event_id, type, source, subject, causation_id, time_ms, sequence,
       trace_id, span_id, broker_ts_ms, observed_at_ms, topic, "partition", "offset", problems,
       trace_sampled"""

# An index scan in flow order: no join, no per-row lookup, no sort.
EVENTS_SQL = f"""
SELECT {EVENT_COLUMNS}
FROM events
ORDER BY flow_id {{collate}}
"""

# A span joins the flow of its conversation id (= correlation id); else the flow of the event
# it names (messaging.message.id); else the flow of the event whose traceparent names it (a
# producer span of OpenTelemetry's own instrumentation names no event); else a flow of its
# trace. COALESCE stops at the first.
_SPAN_FLOW = """COALESCE(s.conversation_id,
           (SELECT e.flow_id FROM events e WHERE e.event_id = s.message_id LIMIT 1),
           (SELECT e.flow_id FROM events e WHERE e.trace_id = s.trace_id
                                             AND e.span_id = s.span_id LIMIT 1),
           (SELECT e.flow_id FROM events e WHERE e.trace_id = s.trace_id LIMIT 1))"""
_SPAN_COLUMNS = (
    's.trace_id, s.span_id, s.parent_span_id, s.kind, s.service, s.consumer_group, s.message_id, '
    's.start_us, s.duration_us, s.status, s.error_type, s.status_message, s.destination, '
    's."partition", s."offset"')
SPANS_SQL = {
    # SQLite computes an ORDER BY on a result column once, in the sorter
    "sqlite": f"SELECT {_SPAN_FLOW} AS flow, {_SPAN_COLUMNS} FROM spans s ORDER BY 1",
    "postgresql": f"SELECT * FROM (SELECT {_SPAN_FLOW} AS flow, {_SPAN_COLUMNS} FROM spans s) x "
                  'ORDER BY x.flow COLLATE "C"',
}

FETCHES_SQL = "SELECT trace_id, status FROM trace_fetches WHERE status <> 'found'"


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
        try:
            cur.close()
        except Exception as exc:  # noqa: BLE001 - the connection is gone: nothing to close
            log.debug("closing the cursor of %s failed: %s", name, exc)


def events_by_flow(raw: Any, dialect: str) -> Iterator[EventRow]:
    """Every stored event, ordered by flow id (Python string order)."""
    new = tuple.__new__
    for row in stream(raw, dialect, EVENTS_SQL.format(collate=collate(dialect)), "cs_events"):
        yield new(EventRow, row)


def spans_by_flow(raw: Any, dialect: str) -> Iterator[SpanRow]:
    """Every stored span that joins a flow, ordered by flow id (Python string order)."""
    new = tuple.__new__
    for row in stream(raw, dialect, SPANS_SQL[dialect], "cs_spans"):
        if row[0] is not None:
            yield new(SpanRow, row)


def unfound_trace_fetches(raw: Any, dialect: str) -> dict[str, str]:
    """trace id -> Jaeger fetch status, for traces whose fetch did not find them (yet)."""
    return dict(stream(raw, dialect, FETCHES_SQL, "cs_fetches"))
