"""`stuck_outbox`: outbox rows pending too long, retried too often, or dead.

The outbox monitor hands over the stuck rows it read; each becomes one anomaly, keyed by
source and row id, so a row is reported once however many polls see it. A row found pending
too long that is later retried too often or dies has its anomaly rewritten to say so (an
`age` anomaly keeps the age first seen; the others hold no age, which would change on
every poll and rewrite them each time).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .anomaly import Anomaly


def stuck_outbox_anomalies(source: str, table: str,
                           rows: Iterable[dict[str, Any]]) -> list[Anomaly]:
    """One `stuck_outbox` anomaly per stuck row (subkind: dead | attempts | age)."""
    found = []
    for row in rows:
        reason = row.get("reason") or ("dead" if row.get("status") == "dead" else "age")
        what = f"{row.get('type')} for {row.get('aggregatetype')}/{row.get('aggregateid')}"
        if reason == "dead":
            why = f"is dead after {row.get('attempts')} attempts"
        elif reason == "attempts":
            why = f"is still pending after {row.get('attempts')} attempts"
        else:
            why = f"has been pending for {row.get('age_s')} s"
        detail = f"outbox {source}: row {row.get('id')} ({what}) {why}"
        if row.get("last_error"):
            detail += f"; last error: {row['last_error']}"
        found.append(Anomaly(
            kind="stuck_outbox",
            key=f"{source}:{row.get('id')}",
            subkind=reason,
            detail=detail,
            correlation_id=row.get("correlation_id"),
            event_id=None if row.get("id") is None else str(row.get("id")),
            subject=row.get("aggregateid"),
            service=row.get("service") or source,
            extra={"source": source, "table": table, "seq": row.get("seq"),
                   "type": row.get("type"), "created_at": row.get("created_at"),
                   "attempts": row.get("attempts"),
                   "age_s": row.get("age_s") if reason == "age" else None,
                   "trace_id": row.get("trace_id"), "status": row.get("status")},
            refresh=reason != "age",
        ))
    return found
