"""The outbox monitor: poll the services' outbox tables (DESIGN.md section 5), read-only.

Per source it stores the backlog (pending, dead), the age of the oldest pending row, the
publish lag p95 (sent_at - created_at over recent sent rows) and the stuck rows (pending
longer than `stuck_after_s`, or retried `max_attempts` times, or dead), each with its
correlation id and trace id; stuck rows also become `stuck_outbox` anomalies. At most
`stuck_limit` rows are listed: the stuck pending rows, oldest first, then the newest dead. A database that
cannot be read is stored as unreachable with the error (never a password) while the figures of
the last good poll stay; the next good poll recovers by itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Engine, column, create_engine, func, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from choreoscope.instrumentation import _dbapi
from choreoscope.instrumentation._clock import rfc3339_from_ms

from .detect.anomaly import record
from .detect.stuck_outbox import stuck_outbox_anomalies
from .store import Store
from .store.engine import UNAVAILABLE_ERRORS, describe_error, normalize_url, sqlite_file
from .store.masking import mask_secrets
from .store.schema import outbox_sources

log = logging.getLogger(__name__)


SPEC_FORMAT = "NAME=DB_URL[#table]"
DEFAULT_TABLE = "outbox"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
_SCHEMES = ("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")
_CORRELATION_KEYS = ("ce_correlationid", "correlationid", "correlation_id", "correlationId")
_COLUMNS = ("seq", "id", "aggregatetype", "aggregateid", "type", "headers", "tracingspancontext",
            "created_at", "status", "attempts", "last_error", "sent_at")


class InvalidOutboxSource(ValueError):
    """An `--outbox` spec that is not `NAME=DB_URL[#table]`; the message says what was wrong."""


@dataclass(frozen=True)
class OutboxSource:
    """One outbox table to watch: `name` labels it, `url` is its database, `table` its name."""

    name: str
    url: str
    table: str = DEFAULT_TABLE

    def __repr__(self) -> str:  # never show the password
        return f"OutboxSource(name={self.name!r}, url={mask_secrets(self.url)!r}, table={self.table!r})"


def parse_outbox_source(spec: str) -> OutboxSource:
    """`"orders=postgresql://u:p@db/orders#outbox"` -> OutboxSource; bad specs raise loudly."""
    if not isinstance(spec, str) or "=" not in spec:
        raise InvalidOutboxSource(f"expected {SPEC_FORMAT}, got {_shown(spec)}")
    name, rest = spec.split("=", 1)
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidOutboxSource(
            f"expected {SPEC_FORMAT} with a NAME of letters, digits, '.', '_' or '-', "
            f"got {_shown(spec)}")
    url, table_name = rest.strip(), DEFAULT_TABLE
    if "#" in url:
        url, table_name = url.rsplit("#", 1)
        if not _IDENT.match(table_name):
            raise InvalidOutboxSource(
                f"expected {SPEC_FORMAT} with a table like outbox or schema.outbox after '#', "
                f"got {_shown(spec)}")
    if not url.startswith(_SCHEMES):
        raise InvalidOutboxSource(
            f"expected {SPEC_FORMAT} with a sqlite:/// or postgresql:// DB_URL, got {_shown(spec)}")
    try:
        make_url(normalize_url(url))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad spec
        raise InvalidOutboxSource(f"expected {SPEC_FORMAT} with a valid DB_URL, got "
                                  f"{_shown(spec)} ({type(exc).__name__})") from None
    return OutboxSource(name, url, table_name)


def scrub_error(exc: BaseException, *urls: str) -> str:
    """A one-line, bounded error message without any password of `urls`."""
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    for url in urls:
        try:
            password = make_url(normalize_url(url)).password
        except Exception:  # noqa: BLE001
            password = None
        for secret in {password, unquote(password or "")} - {None, ""}:
            text = text.replace(str(secret), "***")
    return mask_secrets(text)[:500]


def _sqlite_file(url: str) -> str:
    """For a SQLite URL, ` (file /absolute/path)`: a relative path is the collector's
    working directory's, which an error should say. Empty for any other URL."""
    path = sqlite_file(url)
    return "" if path is None else f" (file {os.path.abspath(path)})"


class OutboxMonitor:
    """Polls outbox tables into the store's `outbox_sources` rows and `stuck_outbox` anomalies."""

    def __init__(self, store: Store, sources: Iterable[OutboxSource | str],
                 stuck_after_s: float = 30.0, max_attempts: int = 5, *,
                 stuck_limit: int = 100, lag_sample: int = 1000,
                 timeout_s: float = 5.0) -> None:
        self.store = store
        self.sources = [s if isinstance(s, OutboxSource) else parse_outbox_source(s)
                        for s in sources]
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise InvalidOutboxSource(f"expected distinct outbox source names, got {names}")
        if stuck_after_s <= 0 or max_attempts < 1:
            raise ValueError("expected stuck_after_s > 0 and max_attempts >= 1, "
                             f"got {stuck_after_s!r} and {max_attempts!r}")
        self.stuck_after_s = float(stuck_after_s)
        self.max_attempts = int(max_attempts)
        self.stuck_limit = stuck_limit
        self.lag_sample = lag_sample
        self.timeout_s = timeout_s
        self._engines: dict[str, Engine] = {}
        self._failing: dict[str, str] = {}  # source -> the error last logged for it

    def poll_once(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Read every source once and store what was seen; returns the rows written.

        A source that fails is recorded as unreachable; the others are still polled.
        """
        now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
        written = []
        for source in self.sources:
            try:
                row = self._read(source, now_ms)
            except Exception as exc:  # noqa: BLE001 - a service's database never stops us
                self._drop_engine(source)
                row = {"source": source.name, "table_name": source.table, "reachable": False,
                       "last_poll_ms": now_ms,
                       "last_error": scrub_error(exc, source.url) + _sqlite_file(source.url)}
                if self._failing.get(source.name) != row["last_error"]:  # once per new error
                    log.warning("outbox %s cannot be read: %s", source.name, row["last_error"])
                self._failing[source.name] = row["last_error"]
                with self.store.engine.begin() as conn:
                    self.store.upsert(conn, outbox_sources, [row], ["source"])
            else:
                if self._failing.pop(source.name, None) is not None:
                    log.info("outbox %s read again", source.name)
                self._store(source, row, now_ms)
            written.append(row)
        return written

    def _store(self, source: OutboxSource, row: dict[str, Any], now_ms: int) -> None:
        """Store what was read of `source` and its stuck rows' anomalies. Anomalies the store
        refuses do not keep the numbers from being stored, nor the next source from being
        polled; a store that cannot be reached is the caller's to report."""
        found = stuck_outbox_anomalies(source.name, source.table, json.loads(row["stuck"]))
        try:
            with self.store.engine.begin() as conn:
                self.store.upsert(conn, outbox_sources, [row], ["source"])
                record(self.store, conn, found, now_ms)
            return
        except UNAVAILABLE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - a row of theirs we cannot store
            log.warning("outbox %s: its stuck rows could not be recorded as anomalies (%s); "
                        "its numbers are stored without them", source.name, describe_error(exc))
        with self.store.engine.begin() as conn:
            self.store.upsert(conn, outbox_sources, [row], ["source"])

    def close(self) -> None:
        for source in self.sources:
            self._drop_engine(source)

    def _read(self, source: OutboxSource, now_ms: int) -> dict[str, Any]:
        schema, _, name = source.table.rpartition(".")
        t = table(name, *(column(c) for c in _COLUMNS), schema=schema or None)
        c = t.c
        picked = [c[k] for k in _COLUMNS]
        with self._engine(source).connect() as conn:
            # per status, so the (status, ...) index is used and sent rows are never scanned
            counts = {status: conn.execute(select(func.count()).select_from(t)
                                           .where(c.status == status)).scalar_one()
                      for status in ("pending", "dead")}
            oldest = conn.execute(
                select(func.min(c.created_at)).where(c.status == "pending")).scalar()
            lags = conn.execute(
                select(c.created_at, c.sent_at)
                .where(c.status == "sent", c.sent_at.is_not(None))
                .order_by(c.seq.desc()).limit(self.lag_sample)).all()
            # Pending rows first, oldest first (each holds back its aggregate); then the
            # newest dead rows: dead rows are never cleaned up, and the oldest of them must not
            # fill the list for ever.
            candidates: list[Any] = []
            for where, order in (((c.status == "pending", c.attempts >= self.max_attempts),
                                  c.seq),
                                 ((c.status == "pending",), c.seq),
                                 ((c.status == "dead",), c.seq.desc())):
                stmt = select(*picked).where(*where).order_by(order).limit(self.stuck_limit)
                candidates += conn.execute(stmt).mappings().all()
        stuck = self._stuck(candidates, now_ms)
        oldest_ms = to_epoch_ms(oldest)
        return {
            "source": source.name,
            "table_name": source.table,
            "reachable": True,
            "last_poll_ms": now_ms,
            "last_ok_ms": now_ms,
            "last_error": None,
            "pending": int(counts.get("pending", 0)),
            "dead": int(counts.get("dead", 0)),
            "oldest_pending_age_s": (None if oldest_ms is None
                                     else round(max(0, now_ms - oldest_ms) / 1000.0, 3)),
            "publish_lag_p95_ms": _p95([_lag_ms(created, sent) for created, sent in lags]),
            "stuck": json.dumps(stuck, sort_keys=True, default=str),
        }

    def _stuck(self, candidates: list[Any], now_ms: int) -> list[dict[str, Any]]:
        by_id: dict[str, dict[str, Any]] = {}
        for r in candidates:
            created_ms = to_epoch_ms(r["created_at"])
            age_s = None if created_ms is None else round(max(0, now_ms - created_ms) / 1000, 3)
            attempts = int(r["attempts"] or 0)
            if r["status"] == "dead":
                reason = "dead"
            elif attempts >= self.max_attempts:
                reason = "attempts"
            elif age_s is not None and age_s >= self.stuck_after_s:
                reason = "age"
            else:
                continue
            headers = _json_object(r["headers"])
            by_id.setdefault(str(r["id"]), {
                "id": str(r["id"]),
                "seq": r["seq"],
                "aggregatetype": r["aggregatetype"],
                "aggregateid": r["aggregateid"],
                "type": r["type"],
                "attempts": attempts,
                "last_error": None if r["last_error"] is None else str(r["last_error"])[:500],
                "age_s": age_s,
                "created_at": rfc3339_from_ms(created_ms),
                "correlation_id": _first(headers, _CORRELATION_KEYS),
                "trace_id": _trace_id(r["tracingspancontext"], headers),
                "service": _first(headers, ("ce_source", "source")),
                "status": r["status"],
                "reason": reason,
            })
        kept = list(by_id.values())[: self.stuck_limit]  # in the order read: pending first
        return sorted(kept, key=lambda s: (s["seq"] is None, s["seq"] or 0, s["id"]))

    def _engine(self, source: OutboxSource) -> Engine:
        engine = self._engines.get(source.name)
        if engine is None:
            engine = _read_only_engine(source.url, self.timeout_s)
            self._engines[source.name] = engine
        return engine

    def _drop_engine(self, source: OutboxSource) -> None:
        engine = self._engines.pop(source.name, None)
        if engine is not None:
            engine.dispose()


def _read_only_engine(url: str, timeout_s: float) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        parsed = make_url(url)
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            # Read-only URI: never creates or writes a service's database file.
            parsed = parsed.set(database="file:" + quote(database, safe="/"),
                                query={**parsed.query, "mode": "ro", "uri": "true"})
        return create_engine(parsed, poolclass=NullPool,
                             connect_args={"timeout": timeout_s, "check_same_thread": False})
    statement_ms = int(timeout_s * 1000)
    return create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=1, connect_args={
        "connect_timeout": max(1, int(timeout_s)),
        "options": f"-c statement_timeout={statement_ms} -c default_transaction_read_only=on",
    })


def to_epoch_ms(value: Any) -> int | None:
    """A stored timestamp (datetime, ISO text, epoch seconds or ms) as epoch ms; None if
    unknown. Times are read as the relay reads them (`_dbapi.time_ms`): naive ones are UTC."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # epoch seconds or ms written as text
            value = float(value.strip())
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        return int(value) if abs(value) >= 1e11 else int(value * 1000)
    try:
        return _dbapi.time_ms(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _lag_ms(created: Any, sent: Any) -> float | None:
    a, b = to_epoch_ms(created), to_epoch_ms(sent)
    return None if a is None or b is None else float(max(0, b - a))


def _p95(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    # nearest-rank percentile
    rank = max(1, -(-95 * len(known) // 100))
    return known[rank - 1]


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _first(headers: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = headers.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _trace_id(tracingspancontext: Any, headers: dict[str, Any]) -> str | None:
    from choreoscope.instrumentation.traceparent import InvalidTraceparent, parse_traceparent

    candidates: list[Any] = []  # whatever the row holds: only a valid str is taken
    if isinstance(tracingspancontext, bytes):
        tracingspancontext = tracingspancontext.decode("utf-8", "replace")
    if isinstance(tracingspancontext, str):
        for line in tracingspancontext.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().lower() == "traceparent":
                candidates.append(value.strip())
    elif isinstance(tracingspancontext, dict):
        candidates.append(tracingspancontext.get("traceparent"))
    candidates.append(headers.get("traceparent"))
    for value in candidates:
        if isinstance(value, str):
            try:
                return parse_traceparent(value).trace_id
            except InvalidTraceparent:
                continue
    return None


def _shown(spec: Any) -> str:
    return repr(mask_secrets(spec)) if isinstance(spec, str) else f"a {type(spec).__name__}"
