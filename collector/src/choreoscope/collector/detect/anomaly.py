"""The `Anomaly` record every detector produces, and the idempotent write of it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..store import Store
from ..store.schema import anomalies

KINDS = (
    "out_of_order",
    "duplicate",
    "orphan",
    "stuck_flow",
    "failed_handler",
    "envelope",
    "untraced",
    "stuck_outbox",
)


@dataclass(frozen=True)
class Anomaly:
    """One detected anomaly. `key` identifies it: the same finding always has the same key."""

    kind: str
    key: str
    detail: str
    subkind: str | None = None
    correlation_id: str | None = None
    event_id: str | None = None
    subject: str | None = None
    service: str | None = None
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, detected_at_ms: int) -> dict[str, Any]:
        if self.kind not in KINDS:
            raise ValueError(f"expected an anomaly kind in {KINDS}, got {self.kind!r}")
        return {
            "key": f"{self.kind}:{self.key}",
            "kind": self.kind,
            "subkind": self.subkind,
            "correlation_id": self.correlation_id,
            "event_id": self.event_id,
            "subject": self.subject,
            "service": self.service,
            "group_name": self.group,
            "detail": self.detail,
            "extra": json.dumps(self.extra, sort_keys=True, default=str) if self.extra else None,
            "detected_at_ms": detected_at_ms,
        }


def record(store: Store, conn: Any, found: list[Anomaly], detected_at_ms: int) -> int:
    """Write anomalies not yet recorded (by key); returns how many were new."""
    rows = {a.row(detected_at_ms)["key"]: a.row(detected_at_ms) for a in found}
    return store.insert_ignore(conn, anomalies, list(rows.values()))
