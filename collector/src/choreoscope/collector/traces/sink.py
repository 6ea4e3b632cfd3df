"""Write normalised spans to the store, idempotently by (trace_id, span_id).

Each chunk of spans is inserted under a savepoint. A chunk the database rejects because of one
bad span is stored span by span (a span still refused is stored with its text made plain, then
with only its ids, kind, status and times), so one span never holds the others back. A store
that cannot be reached raises, and the caller's transaction stores nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from ..ingest.redact import Redactor
from ..store import Store
from ..store.engine import UNAVAILABLE_ERRORS, describe_error
from ..store.schema import spans as spans_table
from ..store.text import clean_texts
from .consumed import name_on_write, unnamed
from .model import Span

log = logging.getLogger(__name__)

ORIGINS = ("jaeger", "otlp")
_CHUNK = 1000
_COLUMNS = [c.name for c in spans_table.columns]
_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}
# What a span keeps when nothing else of it can be stored: enough to place it in its trace.
_MINIMAL = ("trace_id", "span_id", "parent_span_id", "kind", "start_us", "duration_us",
            "status", "origin", "received_at_ms")


class SpanSink:
    """`export(spans, origin=...)` stores spans; a span already stored is left as it is.
    With a `redactor`, attribute values under keys its pattern matches are stored as
    "[REDACTED]", as in event data."""

    def __init__(self, store: Store, redactor: Redactor | None = None) -> None:
        self.store = store
        self._redact = redactor.matches if redactor is not None else None
        mark = _PLACEHOLDER.get(store.dialect)
        # A plain DB-API executemany: SQLAlchemy's per-row parameter processing would cost more
        # than the insert itself on the OTLP receiver's hot path.
        quoted = ", ".join(f'"{c}"' for c in _COLUMNS)
        self._sql = None if mark is None else (
            f"INSERT INTO {spans_table.name} ({quoted}) "
            f"VALUES ({', '.join([mark] * len(_COLUMNS))}) ON CONFLICT DO NOTHING")

    def export(self, spans: Iterable[Span], *, origin: str,
               received_at_ms: int | None = None) -> int:
        """Store spans in one transaction; returns how many were new."""
        with self.store.engine.begin() as conn:
            return self.write(conn, spans, origin=origin, received_at_ms=received_at_ms)

    def write(self, conn: Any, spans: Iterable[Span], *, origin: str,
              received_at_ms: int | None = None) -> int:
        """Store spans on the caller's connection (inside its transaction)."""
        if origin not in ORIGINS:
            raise ValueError(f"expected a span origin in {ORIGINS}, got {origin!r}")
        now_ms = int(time.time() * 1000) if received_at_ms is None else received_at_ms
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for span in spans:
            key = (span.trace_id, span.span_id)
            if key not in rows:
                rows[key] = span.row(origin=origin, received_at_ms=now_ms, redact=self._redact)
        batch = list(rows.values())
        self._name_consumed(conn, batch)
        stored = 0
        for i in range(0, len(batch), _CHUNK):
            chunk = batch[i:i + _CHUNK]
            try:
                with self._savepoint(conn):
                    stored += self._insert(conn, chunk)
            except UNAVAILABLE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - a span the database refuses: one by one
                log.warning("a batch of %d spans was refused (%s); storing span by span",
                            len(chunk), describe_error(exc))
                stored += sum(self._store_one(conn, row) for row in chunk)
        return stored

    def _name_consumed(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        """Consumer spans that name no event get the one their parent produced (consumed.py);
        a failed lookup leaves them for the next analysis pass, never costs the spans."""
        if not any(unnamed(row) for row in rows):
            return
        try:
            with self._savepoint(conn):
                name_on_write(conn, rows)
        except UNAVAILABLE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001
            log.warning("could not look up the events of %d consumer spans (%s); the next "
                        "analysis pass does", sum(map(unnamed, rows)), describe_error(exc))

    def _store_one(self, conn: Any, row: dict[str, Any]) -> int:
        for attempt in (row, clean_texts(row), _minimal(row)):
            try:
                with self._savepoint(conn):
                    return self._insert(conn, [attempt])
            except UNAVAILABLE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - try the plainer row next
                log.warning("span %s/%s was refused: %s", row["trace_id"], row["span_id"],
                            describe_error(exc))
        return 0

    def _insert(self, conn: Any, rows: list[dict[str, Any]]) -> int:
        if self._sql is None:
            return self.store.insert_ignore(conn, spans_table, rows)
        result = conn.exec_driver_sql(self._sql, [tuple(r[c] for c in _COLUMNS) for r in rows])
        return max(0, int(result.rowcount or 0))

    def _savepoint(self, conn: Any) -> Any:
        """A savepoint inside the caller's transaction. pysqlite opens its transaction only at
        the first INSERT/UPDATE/DELETE; a SAVEPOINT before that would be the outermost one, and
        releasing it would commit: BEGIN first so the caller's rollback still undoes it all."""
        if self.store.dialect == "sqlite":
            dbapi = conn.connection.dbapi_connection
            if dbapi is not None and not dbapi.in_transaction:
                conn.exec_driver_sql("BEGIN")
        return conn.begin_nested()


def _minimal(row: dict[str, Any]) -> dict[str, Any]:
    """The row with only what places the span in its trace; the rest empty."""
    out: dict[str, Any] = dict.fromkeys(row)
    out.update({name: row[name] for name in _MINIMAL})
    out.update(name="", out_of_order=False, attributes="{}", links="[]", events="[]")
    return out

