"""Write normalised spans to the store, idempotently by (trace_id, span_id)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..store import Store
from ..store.schema import spans as spans_table
from .model import Span

ORIGINS = ("jaeger", "otlp")
_CHUNK = 1000
_COLUMNS = [c.name for c in spans_table.columns]
_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}


class SpanSink:
    """`export(spans, origin=...)` stores spans; a span already stored is left as it is."""

    def __init__(self, store: Store) -> None:
        self.store = store
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
                rows[key] = span.row(origin=origin, received_at_ms=now_ms)
        batch = list(rows.values())
        stored = 0
        for i in range(0, len(batch), _CHUNK):
            chunk = batch[i:i + _CHUNK]
            if self._sql is None:
                stored += self.store.insert_ignore(conn, spans_table, chunk)
                continue
            result = conn.exec_driver_sql(self._sql, [tuple(r[c] for c in _COLUMNS)
                                                      for r in chunk])
            stored += max(0, int(result.rowcount or 0))
        return stored
