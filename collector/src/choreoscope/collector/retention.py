"""Retention: prune what is older than `--retention` days (0 keeps everything).

Events go by the time the collector stored them, spans by their start time, trace fetches
by their last event, anomalies by when they were detected. Flows and graph edges are not
touched here: the next analysis pass recomputes them from what is left.
"""

from __future__ import annotations

import time

from sqlalchemy import delete

from .store import Store
from .store.schema import anomalies, events, spans, trace_fetches

DAY_MS = 86_400_000


def prune(store: Store, retention_days: float, now_ms: int | None = None) -> dict[str, int]:
    """Delete rows older than `retention_days`; returns rows deleted per table."""
    if retention_days < 0:
        raise ValueError(f"expected retention days >= 0, got {retention_days!r}")
    if retention_days == 0:
        return {}
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    cutoff_ms = now_ms - int(retention_days * DAY_MS)
    statements = {
        "events": delete(events).where(events.c.observed_at_ms < cutoff_ms),
        "spans": delete(spans).where(spans.c.start_us < cutoff_ms * 1000),
        "trace_fetches": delete(trace_fetches).where(trace_fetches.c.last_event_ms < cutoff_ms),
        "anomalies": delete(anomalies).where(anomalies.c.detected_at_ms < cutoff_ms),
    }
    deleted = {}
    with store.engine.begin() as conn:
        for name, statement in statements.items():
            deleted[name] = int(conn.execute(statement).rowcount or 0)
    return deleted
