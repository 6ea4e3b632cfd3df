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
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from choreoscope.instrumentation.decoder import decode_with_headers

from ..store import Store
from ..store.engine import UNAVAILABLE_ERRORS, describe_error, schema_missing
from ..store.schema import events
from ..store.text import clean_texts
from .redact import Redactor
from .rows import COLUMNS, event_values

log = logging.getLogger(__name__)

STORE_REJECTED = "store_rejected"


class StoreUnavailable(RuntimeError):
    """The store could not be reached; the batch was not stored and must be retried."""


# A record handed over undecoded: topic, partition, offset, headers, value, key, broker
# timestamp (ms, None when the record has none). `rows_of` decodes it.
RawRecord = tuple[str, int, int, Any, Any, Any, int | None]


@dataclass
class Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    """`events` rows, values in `COLUMNS` order."""
    raw: list[RawRecord] = field(default_factory=list)
    """Records left undecoded, after those of `rows`: the writer process decodes them
    (writer.py), so both cores share the decoding."""
    observed_at_ms: int = 0
    """When the batch was read, stored with each of its rows."""
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """Next offset to commit per (topic, partition): the highest offset seen + 1."""
    skipped: int = 0
    """Records not stored: those of internal topics."""
    errors: int = 0
    """Consumer error events among the messages (no record: a topic not there yet, ...)."""
    consumed: int = 0
    """Records consumed for this batch (stored or skipped), error events not counted."""
    cpu_s: float = 0.0
    """CPU seconds the ingest process spent since the batch before (see share.py)."""

    def __len__(self) -> int:
        return len(self.rows) + len(self.raw)


def build_batch(messages: Sequence[Any], redactor: Redactor, observed_at_ms: int,
                defer: int = 0) -> Batch:
    """Decode confluent-kafka `Message`s into rows (never raises on a bad record), all but
    the last `defer` records, which are kept in `Batch.raw` for the writer to decode.

    The cyclic garbage collector is paused meanwhile: a batch allocates tens of thousands of
    acyclic objects (header texts, parsed data, rows), and every few hundred allocations
    set off a collection scanning those still alive (measured: 16.5 -> 15.0 µs per record
    for batches of 5,000)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_batch(messages, redactor, observed_at_ms, len(messages) - defer)
    finally:
        if enabled:
            gc.enable()


def _build_batch(messages: Sequence[Any], redactor: Redactor, observed_at_ms: int,
                 decoded: int) -> Batch:
    batch = Batch(observed_at_ms=observed_at_ms)
    rows = batch.rows
    raw = batch.raw
    offsets = batch.offsets
    append = rows.append
    for i, m in enumerate(messages):
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
        ts_type, ts = m.timestamp()
        if i < decoded:
            append(record_row(topic, partition, offset, m.headers(), m.value(), m.key(),
                              ts if ts_type else None, redactor, observed_at_ms))
        else:
            raw.append((topic, partition, offset, m.headers(), m.value(), m.key(),
                        ts if ts_type else None))
    return batch


def rows_of(batch_rows: list[tuple[Any, ...]], raw: Sequence[RawRecord], redactor: Redactor,
            observed_at_ms: int) -> list[tuple[Any, ...]]:
    """`batch_rows` followed by the rows of the `raw` records (never raises on a bad one)."""
    if not raw:
        return batch_rows
    enabled = gc.isenabled()
    gc.disable()
    try:
        return batch_rows + [record_row(*record, redactor, observed_at_ms) for record in raw]
    finally:
        if enabled:
            gc.enable()


def record_row(topic: str, partition: int, offset: int, headers: Any, value: Any, key: Any,
               broker_ts_ms: int | None, redactor: Redactor,
               observed_at_ms: int) -> tuple[Any, ...]:
    """The `events` row of one record; a record whose row cannot be built keeps its
    position and an `ingest_error` problem (never raises)."""
    event, text_headers = decode_with_headers(
        headers, value, topic=topic, partition=partition, offset=offset, key=key,
        timestamp_ms=broker_ts_ms,
    )
    try:
        return event_values(event, redactor, observed_at_ms, headers, None, value, text_headers)
    except Exception as exc:  # noqa: BLE001 - a bug here must not lose the record
        log.warning("row of %s/%s/%s failed: %r", topic, partition, offset, exc)
        kept = _minimal({**dict.fromkeys(COLUMNS),
                         "topic": topic, "partition": partition, "offset": offset,
                         "broker_ts_ms": broker_ts_ms, "observed_at_ms": observed_at_ms,
                         "data_size": None if value is None else len(value)},
                        f"{INGEST_ERROR}: {type(exc).__name__}: only the position was kept")
        return tuple(kept[name] for name in COLUMNS)


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
    replaced = store.file_replaced()
    if replaced is not None:
        raise StoreUnavailable(replaced)
    try:
        with store.engine.begin() as conn:
            return _insert(conn, store.dialect, columns, rows)
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailable(describe_error(exc)) from exc
    except Exception as exc:  # a row the database rejects: go row by row
        if schema_missing(exc):
            raise StoreUnavailable(describe_error(exc)) from exc
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
        except Exception as exc:  # this row rejected: try it sanitized, then minimal
            if schema_missing(exc):
                raise StoreUnavailable(describe_error(exc)) from exc
            reason = describe_error(exc)
            log.warning("row %s/%s/%s rejected: %s", row["topic"], row["partition"],
                        row["offset"], reason)
    return 0


def _sanitized(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every text made valid UTF-8 without NUL characters, and a problem
    saying so."""
    out = clean_texts(row)
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

