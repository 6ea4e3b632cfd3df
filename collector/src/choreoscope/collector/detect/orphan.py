"""`orphan` anomalies: an event whose causation id was never seen as an event id within the
horizon after the effect was observed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from ..reconstruct.load import stream
from .anomaly import Anomaly

KIND = "orphan"


class Effect(NamedTuple):
    """An event whose cause is not in the store."""

    flow_id: str
    event_id: str | None
    type: str | None
    source: str | None
    subject: str | None
    causation_id: str
    observed_at_ms: int
    topic: str
    partition: int
    offset: int


ORPHANS_SQL = """
SELECT e.flow_id, e.event_id, e.type, e.source, e.subject, e.causation_id, e.observed_at_ms,
       e.topic, e."partition", e."offset"
FROM events e
WHERE e.causation_id IS NOT NULL AND e.observed_at_ms <= {cutoff}
  AND NOT EXISTS (SELECT 1 FROM events c WHERE c.event_id = e.causation_id)
"""


def load(raw: Any, dialect: str, *, now_ms: int | None = None,
         horizon_s: float = 0.0) -> Iterator[Effect]:
    """Effects whose cause is unknown; with `now_ms`, only those observed `horizon_s` ago."""
    cutoff = 2**62 if now_ms is None else int(now_ms - horizon_s * 1000)
    for row in stream(raw, dialect, ORPHANS_SQL.format(cutoff=cutoff), "cs_orphans"):
        yield Effect._make(row)


def detect(effects: Iterable[Effect], *, now_ms: int, horizon_s: float) -> list[Anomaly]:
    """One anomaly per orphaned event observed at least `horizon_s` before `now_ms`
    (duplicates of it share the key), by topic, partition and offset."""
    found: list[Anomaly] = []
    for e in sorted(effects, key=lambda e: (e.topic, e.partition, e.offset)):
        if now_ms - e.observed_at_ms < horizon_s * 1000:
            continue
        name = e.event_id or f"{e.topic}/{e.partition}/{e.offset}"
        found.append(Anomaly(
            kind=KIND, key=name,
            detail=f"cause {e.causation_id} of {e.type or '?'} {name} was never seen "
                   f"within {horizon_s:g}s",
            correlation_id=e.flow_id, event_id=e.event_id, subject=e.subject, service=e.source,
            extra={"type": e.type, "causation_id": e.causation_id,
                   "observed_at_ms": e.observed_at_ms}))
    return found
