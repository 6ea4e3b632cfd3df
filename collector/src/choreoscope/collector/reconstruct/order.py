"""Processing order per consumer group (CONSUMER span start times) and bus order.

Bus order is (partition, offset) within a partition and the record timestamp across topics (and
across partitions of one topic, where offsets do not compare). With Kafka's default CreateTime
that timestamp is the producer's clock, so across partitions one record is known to be first
only when it leads by more than the skew tolerated between producers (`--skew`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from .flows import Flow
from .load import EventRow, stream


def processing_order(flow: Flow) -> dict[str, dict[str, int]]:
    """Per consumer group: event id -> start (us) of the first processing of it."""
    out: dict[str, dict[str, int]] = {}
    for s in flow.spans:
        if s.kind != "consumer" or not s.group or s.message_id is None:
            continue
        seen = out.setdefault(s.group, {})
        prev = seen.get(s.message_id)
        if prev is None or s.start_us < prev:
            seen[s.message_id] = s.start_us
    return out


def reached_bus_before(a: EventRow, b: EventRow, skew_ms: float = 0.0) -> bool:
    """True when record `a` is known to have reached the bus before record `b`: at a lower
    offset of the same partition, else with a record timestamp more than `skew_ms` earlier."""
    if a.topic == b.topic and a.partition == b.partition:
        return a.offset < b.offset
    if a.broker_ts_ms is None or b.broker_ts_ms is None:
        return False
    return b.broker_ts_ms - a.broker_ts_ms > skew_ms


class Processed(NamedTuple):
    """One processing of an event by a consumer group, for sequence and time ordering."""

    group: str
    subject: str
    start_us: int
    trace_id: str
    span_id: str
    service: str | None
    event_id: str
    source: str | None
    type: str | None
    sequence: int | None
    time_ms: int | None
    time: str | None
    flow_id: str
    topic: str
    partition: int
    offset: int
    broker_ts_ms: int | None


PROCESSED_SQL = """
SELECT s.consumer_group, e.subject, s.start_us, s.trace_id, s.span_id, s.service, e.event_id,
       e.source, e.type, e.sequence, e.time_ms, e.time, e.flow_id, e.topic, e."partition",
       e."offset", e.broker_ts_ms
FROM spans s JOIN events e ON e.event_id = s.message_id
WHERE s.kind = 'consumer' AND s.consumer_group IS NOT NULL AND e.subject IS NOT NULL
  AND (e.sequence IS NOT NULL OR e.time_ms IS NOT NULL)
  AND (s."offset" IS NULL OR (e.topic = s.destination AND e."partition" = s."partition"
                              AND e."offset" = s."offset"))
ORDER BY s.consumer_group, e.subject, s.start_us, s.trace_id, s.span_id
"""


def processed_by_group_subject(raw: Any, dialect: str) -> Iterator[Processed]:
    """Every processing of an event with a subject, by group, subject, then start time.

    A span that names no offset and whose event was published twice is given once.
    """
    last: tuple[str, str] | None = None
    make = Processed._make
    for row in stream(raw, dialect, PROCESSED_SQL, "cs_processed"):
        key = (row[3], row[4])
        if key == last:
            continue
        last = key
        yield make(row)
