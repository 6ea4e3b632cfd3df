"""Retention: prune what is older than `--retention` days (0 keeps everything).

Whole flows go, never a part of one: a flow's events are deleted once its newest event was
stored before the cutoff (a flow cut in two would show a cause never seen, an `orphan`, and
another variant). A flow that never ends is cut at twice the retention, so the store stays
bounded. Spans go with the events of their trace, or by their start time when no event names
their trace; anomalies go with their flow, or by when they were detected when they have none.
Trace fetches go by their last event. Flows and graph edges are not touched here: the next
analysis pass recomputes them from what is left. The events and spans pruned are added up in
`meta` (`PRUNED_KEYS`), so the metrics' stored-ever counters never go down.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, exists, func, or_, select

from .store import Store
from .store.schema import anomalies, events, meta, spans, trace_fetches
from .traces.sink import ORIGINS as SPAN_ORIGINS

DAY_MS = 86_400_000
# meta keys: events, and spans per origin, pruned since the store was made
PRUNED_KEYS = {"events": "retention.pruned.events",
               **{f"spans.{o}": f"retention.pruned.spans.{o}" for o in SPAN_ORIGINS}}


def prune(store: Store, retention_days: float, now_ms: int | None = None) -> dict[str, int]:
    """Delete rows older than `retention_days`; returns rows deleted per table."""
    if retention_days < 0:
        raise ValueError(f"expected retention days >= 0, got {retention_days!r}")
    if retention_days == 0:
        return {}
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    cutoff_ms = now_ms - int(retention_days * DAY_MS)
    bound_ms = now_ms - 2 * int(retention_days * DAY_MS)
    idle_flows = (select(events.c.flow_id).group_by(events.c.flow_id)
                  .having(func.max(events.c.observed_at_ms) < cutoff_ms))
    e = events.alias("e")
    statements = {
        "events": delete(events).where(or_(events.c.flow_id.in_(idle_flows),
                                           events.c.observed_at_ms < bound_ms)),
        # after the events: what is left of them keeps its spans and anomalies
        **{f"spans.{origin}": delete(spans).where(
            spans.c.origin == origin, spans.c.start_us < cutoff_ms * 1000,
            or_(spans.c.start_us < bound_ms * 1000,
                ~exists().where(e.c.trace_id == spans.c.trace_id))) for origin in SPAN_ORIGINS},
        "trace_fetches": delete(trace_fetches).where(trace_fetches.c.last_event_ms < cutoff_ms),
        "anomalies": delete(anomalies).where(
            anomalies.c.detected_at_ms < cutoff_ms,
            or_(anomalies.c.correlation_id.is_(None), anomalies.c.detected_at_ms < bound_ms,
                ~exists().where(e.c.flow_id == anomalies.c.correlation_id))),
    }
    deleted: dict[str, int] = {}
    with store.engine.begin() as conn:
        for name, statement in statements.items():
            deleted[name] = int(conn.execute(statement).rowcount or 0)
        counted: list[Mapping[str, Any]] = [
            {"key": key, "value": str(int(_meta(conn, key) or 0) + deleted[name])}
            for name, key in PRUNED_KEYS.items() if deleted[name]]
        store.upsert(conn, meta, counted, ["key"])
    spans_deleted = sum(deleted.pop(f"spans.{origin}") for origin in SPAN_ORIGINS)
    return {"events": deleted.pop("events"), "spans": spans_deleted, **deleted}


def pruned(conn: Any) -> dict[str, int]:
    """What retention has pruned since the store was made: `events`, `spans.ORIGIN`."""
    return {name: int(_meta(conn, key) or 0) for name, key in PRUNED_KEYS.items()}


def _meta(conn: Any, key: str) -> str | None:
    value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    return value if value is None or str(value).isdigit() else None
