"""The `Anomaly` record every detector produces, and the idempotent write of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, or_, select, update

from ..store import Store
from ..store.schema import anomalies
from ..store.text import cut_id

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
    """One detected anomaly. `key` identifies it: the same finding always has the same key.

    `refresh`: the description may grow as data arrives (the handled event is stored after
    its failed span, a third delivery of a duplicate), so a row already recorded under the
    key is brought up to date; its `detected_at_ms` stays. Descriptions holding a time
    (how long a flow has been idle) keep the value they had when first recorded.
    """

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
    refresh: bool = False

    def row(self, detected_at_ms: int) -> dict[str, Any]:
        if self.kind not in KINDS:
            raise ValueError(f"expected an anomaly kind in {KINDS}, got {self.kind!r}")
        return {
            "key": storable_key(self.kind, self.key),
            "kind": self.kind,
            "subkind": _storable(self.subkind, 64),
            "correlation_id": _storable_id(self.correlation_id, 128),
            "event_id": _storable_id(self.event_id, 128),
            "subject": _storable(self.subject, 255),
            "service": _storable(self.service, 255),
            "group_name": _storable(self.group, 255),
            "detail": _storable(self.detail),
            "extra": json.dumps(self.extra, sort_keys=True, default=str) if self.extra else None,
            "detected_at_ms": detected_at_ms,
        }


def _storable(text: str | None, limit: int | None = None) -> str | None:
    """`text` without NUL characters, which PostgreSQL text refuses (a problem quoting a
    record's bad type, say, would otherwise fail every analysis pass), cut to the column's
    `limit`: ids from outside the bus (an outbox row's correlation id) are not cut at ingest."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if limit is None or len(text) <= limit else text[:limit]


def _storable_id(text: str | None, limit: int) -> str | None:
    """`_storable` for an identifier: one over the column's length keeps a hash of the whole,
    as ingest stores it (`cut_id`), so an outbox row's long correlation id names the flow its
    events make."""
    text = _storable(text)
    return None if text is None else cut_id(text, limit)


_KEY_LIMIT = 512


def storable_key(kind: str, key: str) -> str:
    """The stored key of an anomaly: `kind:key`, NUL-free; one over the column's length keeps
    its start and a hash of the whole, so two long keys stay two anomalies."""
    text = _storable(f"{kind}:{key}")
    assert text is not None
    if len(text) <= _KEY_LIMIT:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:_KEY_LIMIT - 65]}#{digest}"


# What a refresh may change: everything but the key, the kind and the detection time.
_REFRESHED = ("subkind", "correlation_id", "event_id", "subject", "service", "group_name",
              "detail", "extra")
_REFRESH = (
    update(anomalies)
    .where(anomalies.c.key == bindparam("the_key"),
           or_(*(anomalies.c[c].is_distinct_from(bindparam(f"new_{c}")) for c in _REFRESHED)))
    .values({c: bindparam(f"new_{c}") for c in _REFRESHED})
)


def record(store: Store, conn: Any, found: list[Anomaly], detected_at_ms: int) -> int:
    """Write anomalies not yet recorded (by key), refresh those that ask for it; returns how
    many were new.

    An analysis pass offers every anomaly it finds, almost all of them recorded by an earlier
    pass: the keys already stored are looked up first, and only the others are built into
    rows and inserted (a key inserted meanwhile by another collector is still ignored)."""
    by_key: dict[str | None, Anomaly] = {}
    for a in found:
        by_key[storable_key(a.kind, a.key)] = a  # the last found wins
    known = _recorded(conn, [k for k in by_key if k is not None])
    rows = [a.row(detected_at_ms) for key, a in by_key.items() if key not in known]
    new = store.insert_ignore(conn, anomalies, rows)
    refreshed = [a.row(detected_at_ms) for key, a in by_key.items() if a.refresh and key in known]
    if refreshed:  # only the rows whose description changed are written
        conn.execute(_REFRESH, [{"the_key": row["key"], **{f"new_{c}": row[c] for c in _REFRESHED}}
                                for row in refreshed])
    return new


_LOOKUP_CHUNK = 500  # keys per lookup: within SQLite's and PostgreSQL's parameter limits


def _recorded(conn: Any, keys: list[str]) -> set[str]:
    """Which of `keys` are recorded already."""
    known: set[str] = set()
    for i in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[i:i + _LOOKUP_CHUNK]
        known.update(conn.execute(select(anomalies.c.key).where(anomalies.c.key.in_(chunk)))
                     .scalars())
    return known
