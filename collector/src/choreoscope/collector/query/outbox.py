"""Outbox sources as last polled by the outbox monitor."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from ..store import Store
from ..store.masking import mask_secrets
from ..store.schema import outbox_sources
from . import intervals
from ._convert import json_list, rfc3339_ms
from .formatting import STALE_POLLS

_STUCK_KEYS = ("id", "aggregatetype", "aggregateid", "type", "attempts", "last_error", "age_s",
               "correlation_id", "trace_id", "status")


def outbox_status(store: Store, *, now_ms: int | None = None) -> list[dict[str, Any]]:
    """One entry per outbox source, by name. Figures are those of the last successful poll;
    `reachable` is false (and `last_error` says why) when the last poll failed; `stale` is
    true when no collector has polled the source for `STALE_POLLS` of the poll intervals the
    collectors record (stopped, or no longer given it): its figures are then old."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with store.engine.connect() as conn:
        poll_s = intervals.recorded(conn).poll_s
        rows = conn.execute(select(outbox_sources).order_by(outbox_sources.c.source)).mappings()
        return [_source(row, is_stale(row["last_poll_ms"], now_ms, poll_s)) for row in rows]


def is_stale(last_poll_ms: int | None, now_ms: int, poll_s: float) -> bool:
    """Whether a source last polled at `last_poll_ms` is no longer polled by anyone."""
    return last_poll_ms is not None and now_ms - last_poll_ms > STALE_POLLS * poll_s * 1000


def stuck_outbox_rows(store: Store, some_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(source, row) of the stuck or dead outbox rows whose row id, correlation id or trace id
    is `some_id`, as last polled: the events of a flow that may never have reached the bus."""
    wanted = {some_id, some_id.lower()}
    return [(source["source"], row) for source in outbox_status(store) for row in source["stuck"]
            if wanted & {str(row.get(k)) for k in ("id", "correlation_id", "trace_id")}]


def _source(row: Any, stale: bool) -> dict[str, Any]:
    stuck = [r for r in json_list(row["stuck"]) if isinstance(r, dict)]
    for r in stuck:  # an error may quote a database URL: never show its password
        if isinstance(r.get("last_error"), str):
            r["last_error"] = mask_secrets(r["last_error"])
    return {
        "source": row["source"],
        "table": row["table_name"],
        "pending": row["pending"],
        "dead": row["dead"],
        "oldest_pending_age_s": row["oldest_pending_age_s"],
        "publish_lag_p95_ms": row["publish_lag_p95_ms"],
        "stuck": [{k: r.get(k) for k in _STUCK_KEYS} | r for r in stuck],
        "reachable": bool(row["reachable"]),
        "last_ok_at": rfc3339_ms(row["last_ok_ms"]),
        "last_poll_at": rfc3339_ms(row["last_poll_ms"]),
        "last_error": None if row["last_error"] is None else mask_secrets(row["last_error"]),
        "stale": stale,
    }
