"""One ingest batch: decode consumed records into `events` rows and store them in one
transaction; the offsets to commit once the rows are in the store.

Records of internal topics (names starting with `__`) are skipped but their offsets still
advance. A batch the database rejects because of one bad row is stored row by row, so one
record never holds the others back; a store that cannot be reached raises StoreUnavailable
and nothing is committed.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from choreoscope.instrumentation.decoder import decode_with_headers

from ..store import Store
from ..store.engine import UNAVAILABLE_ERRORS, describe_error
from ..store.schema import events
from .redact import Redactor
from .rows import COLUMNS, event_values

log = logging.getLogger(__name__)

STORE_REJECTED = "store_rejected"


class StoreUnavailable(RuntimeError):
    """The store could not be reached; the batch was not stored and must be retried."""


@dataclass
class Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    """`events` rows, values in `COLUMNS` order."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """Next offset to commit per (topic, partition): the highest offset seen + 1."""
    skipped: int = 0
    """Records not stored: those of internal topics."""
    errors: int = 0
    """Consumer error events among the messages (no record: a topic not there yet, ...)."""
    consumed: int = 0
    """Records consumed for this batch (stored or skipped), error events not counted."""

    def __len__(self) -> int:
        return len(self.rows)


def build_batch(messages: Iterable[Any], redactor: Redactor, observed_at_ms: int) -> Batch:
    """Decode confluent-kafka `Message`s into rows (never raises on a bad record).

    The cyclic garbage collector is paused meanwhile: a batch allocates tens of thousands of
    acyclic objects (header texts, parsed data, rows), and every few hundred allocations
    set off a collection scanning those still alive (measured: 16.5 -> 15.0 µs per record
    for batches of 5,000)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_batch(messages, redactor, observed_at_ms)
    finally:
        if enabled:
            gc.enable()


def _build_batch(messages: Iterable[Any], redactor: Redactor, observed_at_ms: int) -> Batch:
    batch = Batch()
    rows = batch.rows
    offsets = batch.offsets
    append = rows.append
    for m in messages:
        if m.error() is not None:
            log.warning("consumer error: %s", m.error())
            batch.errors += 1
            continue
        topic = m.topic()
        partition = m.partition()
        offset = m.offset()
        offsets[(topic, partition)] = offset + 1
        if topic.startswith("__"):
            batch.skipped += 1
            continue
        headers = m.headers()
        value = m.value()
        ts_type, ts = m.timestamp()
        event, text_headers = decode_with_headers(
            headers, value, topic=topic, partition=partition, offset=offset, key=m.key(),
            timestamp_ms=ts if ts_type else None,
        )
        try:
            row = event_values(event, redactor, observed_at_ms, headers, None, value,
                               text_headers)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the record
            log.warning("row of %s/%s/%s failed: %r", topic, partition, offset, exc)
            kept = _minimal({**dict.fromkeys(COLUMNS),
                             "topic": topic, "partition": partition, "offset": offset,
                             "broker_ts_ms": ts if ts_type else None,
                             "observed_at_ms": observed_at_ms,
                             "data_size": None if value is None else len(value)},
                            f"{INGEST_ERROR}: {type(exc).__name__}: only the position was kept")
            row = tuple(kept[name] for name in COLUMNS)
        append(row)
    return batch


INGEST_ERROR = "ingest_error"
assert set(COLUMNS) == {c.name for c in events.columns}


def store_rows(store: Store, rows: list[dict[str, Any]]) -> int:
    """Insert rows into `events` (existing (topic, partition, offset) ignored) in one
    transaction; returns the rows inserted."""
    if not rows:
        return 0
    columns = tuple(rows[0])
    return store_tuples(store, columns, list(map(itemgetter(*columns), rows)))


def store_tuples(store: Store, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> int:
    """`store_rows` for rows given as tuples of `columns` (what the writer process gets)."""
    if not rows:
        return 0
    try:
        with store.engine.begin() as conn:
            return _insert(conn, store.dialect, columns, rows)
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailable(describe_error(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a row the database rejects: go row by row
        log.warning("batch of %d rows rejected (%s); storing row by row", len(rows), describe_error(exc))
    return sum(_store_one(store, dict(zip(columns, row, strict=True))) for row in rows)


def _insert(conn: Any, dialect: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> int:
    """executemany of positional tuples straight to the driver: the per-row parameter
    processing of a Core insert costs more than SQLite's own work."""
    sql = _SQL.get((dialect, columns))
    if sql is None:
        names = ", ".join(f'"{c}"' for c in columns)
        if dialect == "sqlite":
            sql = f"INSERT OR IGNORE INTO events ({names}) VALUES ({', '.join('?' * len(columns))})"
        elif dialect == "postgresql":
            marks = ", ".join(["%s"] * len(columns))
            sql = f"INSERT INTO events ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        else:
            raise ValueError(f"expected a sqlite or postgresql store, got {dialect!r}")
        _SQL[(dialect, columns)] = sql
    result = conn.exec_driver_sql(sql, rows)
    return int(result.rowcount) if result.rowcount is not None else 0


_SQL: dict[tuple[str, tuple[str, ...]], str] = {}


def _store_one(store: Store, row: dict[str, Any]) -> int:
    for attempt in (row, _sanitized(row), _minimal(row)):
        try:
            with store.engine.begin() as conn:
                return store.insert_ignore(conn, events, [attempt])
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(describe_error(exc)) from exc
        except Exception as exc:  # noqa: BLE001
            reason = describe_error(exc)
            log.warning("row %s/%s/%s rejected: %s", row["topic"], row["partition"],
                        row["offset"], reason)
    return 0


def _sanitized(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every text made valid UTF-8 without NUL characters."""
    out = dict(row)
    for name, value in row.items():
        if isinstance(value, str):
            out[name] = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    _note(out, f"{STORE_REJECTED}: text sanitized")
    return out


def _minimal(row: dict[str, Any],
             problem: str = f"{STORE_REJECTED}: only the position was kept") -> dict[str, Any]:
    """The row with only its position and a problem: the record is at least accounted for."""
    keep = ("topic", "partition", "offset", "broker_ts_ms", "observed_at_ms", "data_size")
    out = {name: (row[name] if name in keep else None) for name in row}
    out["flow_id"] = f"{row['topic']}/{row['partition']}/{row['offset']}"
    out["envelope"] = "unknown"
    out["data_truncated"] = False
    out["problems"] = json.dumps([problem])
    return out


def _note(row: dict[str, Any], problem: str) -> None:
    problems = json.loads(row["problems"]) if row.get("problems") else []
    problems.append(problem)
    row["problems"] = json.dumps(problems)

