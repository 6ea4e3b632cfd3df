"""Anomalies as stored by the detectors, filtered and counted in SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, func, select

from ..detect.anomaly import KINDS
from ..store import Store
from ..store.schema import anomalies
from ._convert import has_nul, json_or, rfc3339_ms


def list_anomalies(store: Store, *, kind: str | None = None, correlation_id: str | None = None,
                   subject: str | None = None, service: str | None = None,
                   since_ms: int | None = None, offset: int = 0,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """Anomalies in detection order (oldest first), optionally filtered (all filters exact)."""
    stmt = select(anomalies).where(*_conditions(kind, correlation_id, subject, service, since_ms))
    stmt = stmt.order_by(anomalies.c.detected_at_ms, anomalies.c.id).offset(max(0, int(offset)))
    if limit is not None:
        stmt = stmt.limit(max(0, int(limit)))
    with store.engine.connect() as conn:
        return [anomaly_json(row) for row in conn.execute(stmt).mappings()]


def count_anomalies_by_kind(store: Store, *, since_ms: int | None = None) -> dict[str, int]:
    """How many anomalies of each kind (every kind present, zeros included)."""
    counts = dict.fromkeys(KINDS, 0)
    stmt = (select(anomalies.c.kind, func.count())
            .where(*_conditions(None, None, None, None, since_ms)).group_by(anomalies.c.kind))
    with store.engine.connect() as conn:
        for kind, count in conn.execute(stmt):
            counts[kind] = int(count)
    return counts


def _conditions(kind: str | None, correlation_id: str | None, subject: str | None,
                service: str | None, since_ms: int | None) -> list[Any]:
    if has_nul(kind, correlation_id, subject, service):
        return [false()]
    where = []
    if kind:
        where.append(anomalies.c.kind == kind)
    if correlation_id:
        where.append(anomalies.c.correlation_id == correlation_id)
    if subject:
        where.append(anomalies.c.subject == subject)
    if service:
        where.append(anomalies.c.service == service)
    if since_ms is not None:
        where.append(anomalies.c.detected_at_ms >= int(since_ms))
    return where


def anomaly_json(row: Any) -> dict[str, Any]:
    """One `anomalies` row in the JSON shape of DESIGN.md section 6 (plus `extra`)."""
    return {
        "kind": row["kind"],
        "subkind": row["subkind"],
        "correlation_id": row["correlation_id"],
        "event_id": row["event_id"],
        "subject": row["subject"],
        "service": row["service"],
        "group": row["group_name"],
        "detail": row["detail"],
        "detected_at": rfc3339_ms(row["detected_at_ms"]),
        "extra": json_or(row["extra"], {}),
    }
