"""A tiny dialect layer over plain DB-API connections: sqlite3 and psycopg 3.

The outbox is written with plain SQL so that services need no SQLAlchemy. What differs
between the two databases lives here: the placeholder (`?` / `%s`), how JSON, uuids and
timestamps are passed and read back, and row locking. Rows are read as plain tuples and
JSON columns as text (`as_text`, `json_from_text`), whatever row factory or JSON loader the
connection was set up with. SQLAlchemy objects handed in by the
caller are used through duck typing (an Engine has `raw_connection`, a Connection has
`exec_driver_sql`, a Session has `connection()`); SQLAlchemy itself is never imported.

Timestamps: `timestamptz` on PostgreSQL; on SQLite, RFC 3339 UTC text with milliseconds
(`2026-01-02T03:04:05.678Z`), which sorts as text in time order. Internally every time is
an integer of milliseconds since the epoch.
"""

from __future__ import annotations

import inspect
import json
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ._clock import format_ms as format_time
from .wire import json_default

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POSTGRES_INSTALL = "pip install 'choreoscope-instrumentation[postgres]'"


@dataclass(frozen=True)
class Dialect:
    name: str
    """`sqlite` or `postgresql`."""
    placeholder: str

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def sql(self, text: str) -> str:
        """`text` written with `?` placeholders, in this dialect's paramstyle."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def time_param(self, ms: int | None) -> Any:
        if ms is None:
            return None
        if self.postgres:
            return _EPOCH + timedelta(milliseconds=ms)
        return format_time(ms)

    def is_json(self, column: str) -> str:
        """SQL telling whether `column` is of a JSON type (then its text is a JSON document)."""
        if self.postgres:
            return f"pg_typeof({column}) in ('json'::regtype, 'jsonb'::regtype)"
        return "0"  # SQLite has no JSON column type: its JSON is text

    def json_param(self, value: Any) -> str:
        try:
            text = json.dumps(value, separators=(",", ":"), default=json_default, allow_nan=False)
        except ValueError as exc:  # NaN / Infinity: not JSON, jsonb and consumers refuse it
            raise ValueError(f"expected JSON data, got a value JSON cannot hold ({exc})") from None
        # jsonb refuses the NUL character, and its error would abort the caller's transaction.
        if self.postgres and "\\u0000" in text and _has_nul(json.loads(text)):
            raise ValueError("expected JSON data PostgreSQL's jsonb can hold, got a text with a "
                             "NUL character (\\u0000), which jsonb refuses")
        return text


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


SQLITE = Dialect("sqlite", "?")
POSTGRES = Dialect("postgresql", "%s")


def time_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of a stored time (datetime or RFC 3339-ish text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        if value.tzinfo is None:  # SQLite's CURRENT_TIMESTAMP: UTC without an offset
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // timedelta(milliseconds=1)
    raise TypeError(f"expected a datetime or RFC 3339 text, got {type(value).__name__}")


def as_text(column: str) -> str:
    """SQL reading `column` as text, on both databases and whatever the column's type.

    JSON columns are always read this way and parsed by `json_from_text`. Reading them as
    the driver decodes them would depend on the column's type and the connection's set-up:
    psycopg decodes `jsonb` / `json` itself (with the loader the application or SQLAlchemy
    registered) but gives `text` as it is, and SQLite gives whatever a column's affinity
    made of the stored text (a `payload json` column turns `123` into an integer). A JSON
    string payload `"123"` would then be indistinguishable from the number 123.
    """
    return f"cast({column} as text)"


def json_from_text(text: str | bytes | None) -> Any:
    """A JSON column read through `as_text` as Python; SQL NULL is None."""
    if text is None:
        return None
    if not isinstance(text, str | bytes | bytearray):
        raise TypeError(f"expected a JSON column read as text, got {type(text).__name__}")
    return json.loads(text)


def tuple_cursor(conn: Any) -> Any:
    """A cursor on a sqlite3 or psycopg connection whose rows are plain tuples.

    The connection may have been opened with another row factory (psycopg's `dict_row` or
    `namedtuple_row`, a sqlite3 `row_factory`): the rows read here must not depend on it.
    """
    raw = _unwrap(conn)
    if isinstance(raw, sqlite3.Connection):
        cur = raw.cursor()
        cur.row_factory = None
        return cur
    if _is_psycopg(raw):
        from psycopg.rows import tuple_row

        return raw.cursor(row_factory=tuple_row)
    return conn.cursor()


# -- the caller's connection, for Outbox.add ------------------------------------------------


class Executor:
    """Runs statements on the caller's connection, inside the caller's transaction."""

    def __init__(self, dialect: Dialect, run: Callable[[str, Sequence[Any]], Any]) -> None:
        self.dialect = dialect
        self._run = run

    def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        result = self._run(self.dialect.sql(sql), tuple(params))
        row = result.fetchone()
        return tuple(row) if row is not None else None


def executor_for(conn: Any) -> Executor:
    """An `Executor` for a SQLAlchemy Connection or Session, or a sqlite3/psycopg connection."""
    if inspect.iscoroutinefunction(getattr(conn, "execute", None)):
        raise TypeError(
            f"expected a synchronous connection, got the asyncio one {_describe(conn)}: the "
            "outbox writes with blocking calls. With SQLAlchemy's asyncio API call it through "
            "`await conn.run_sync(lambda sync_conn: outbox.add(sync_conn, ...))` (a session "
            "has run_sync too); with psycopg, give a psycopg.Connection"
        )
    if hasattr(conn, "exec_driver_sql") and hasattr(conn, "dialect"):  # SQLAlchemy Connection
        return _sqlalchemy_executor(conn)
    if _is_sqlalchemy_session(conn):
        return _sqlalchemy_executor(conn.connection())
    dbapi = _unwrap(conn)
    dialect = dialect_of_dbapi(dbapi)
    if dialect is None:
        raise TypeError(
            "expected a SQLAlchemy Connection or Session, or a sqlite3 or psycopg connection, "
            f"got {_describe(conn)}"
        )

    def run(sql: str, params: Sequence[Any]) -> Any:
        cur = tuple_cursor(dbapi)
        cur.execute(sql, params)
        return cur

    return Executor(dialect, run)


def commits_each_statement(conn: Any) -> bool:
    """Whether a statement run on `conn` now commits on its own: its driver connection is in
    autocommit mode and no transaction is open (`BEGIN`, psycopg's `conn.transaction()`).
    `conn` is what `executor_for` takes."""
    if hasattr(conn, "exec_driver_sql") and hasattr(conn, "dialect"):  # SQLAlchemy Connection
        dbapi = conn.connection.dbapi_connection
    elif _is_sqlalchemy_session(conn):
        dbapi = conn.connection().connection.dbapi_connection
    else:
        dbapi = _unwrap(conn)
    if isinstance(dbapi, sqlite3.Connection):
        if dbapi.in_transaction:
            return False
        autocommit = getattr(dbapi, "autocommit", None)  # Python 3.12+: True, False or legacy
        if autocommit is True or autocommit is False:
            return autocommit
        return dbapi.isolation_level is None  # legacy: None is autocommit
    if _is_psycopg(dbapi):
        # TransactionStatus.IDLE (0): not inside a transaction block
        return bool(dbapi.autocommit) and int(dbapi.info.transaction_status) == 0
    return False


def _sqlalchemy_executor(conn: Any) -> Executor:
    dialect = dialect_named(conn.dialect.name)

    def run(sql: str, params: Sequence[Any]) -> Any:
        return conn.exec_driver_sql(sql, params)

    return Executor(dialect, run)


def _is_sqlalchemy_session(obj: Any) -> bool:
    return (
        type(obj).__module__.startswith("sqlalchemy.orm")
        and callable(getattr(obj, "connection", None))
        and hasattr(obj, "get_bind")
    )


# -- the outbox's own connections, for create_table and the relay --------------------------


def connection_factory(db: Any) -> tuple[Callable[[], Any], Dialect | None]:
    """A zero-argument function opening a DB-API connection to `db`, and its dialect if known.

    `db` is a `sqlite:///path` or `postgresql://...` URL, a SQLAlchemy Engine, or a
    zero-argument callable returning a new sqlite3/psycopg connection.
    """
    if isinstance(db, str):
        return _url_factory(db)
    if hasattr(db, "raw_connection") and hasattr(db, "dialect"):  # SQLAlchemy Engine
        return db.raw_connection, dialect_named(db.dialect.name)
    if callable(db):
        return db, None
    raise TypeError(
        "expected a database URL, a SQLAlchemy Engine or a zero-argument callable returning "
        f"a DB-API connection, got {_describe(db)}"
    )


def _sqlite_factory(path: str, query: str, url: str) -> Callable[[], Any]:
    """sqlite3's connect for the path and query of a SQLAlchemy-style SQLite URL: `timeout`
    (seconds, default 30) and `uri=true` (the path is a `file:` URI, its other parameters
    SQLite's) are read as SQLAlchemy reads them; other parameters (`check_same_thread`, ...)
    do not change which file is opened, and are left to the caller's own engine."""
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    try:
        timeout = float(params.pop("timeout", 30.0))
    except ValueError:
        raise ValueError(f"expected the timeout of {url!r} in seconds") from None
    if params.pop("uri", "").lower() in ("true", "1", "yes"):
        rest = urllib.parse.urlencode(
            {k: v for k, v in params.items() if k not in _SQLALCHEMY_SQLITE_ARGS})
        target = f"{path}?{rest}" if rest else path
        return lambda: sqlite3.connect(target, timeout=timeout, uri=True,
                                       check_same_thread=False)
    # check_same_thread=False: the relay serialises its use of a connection itself, and may
    # be closed (or run) from another thread than the one that opened it
    return lambda: sqlite3.connect(path, timeout=timeout, check_same_thread=False)


# Query parameters SQLAlchemy's pysqlite dialect takes for itself, never SQLite's.
_SQLALCHEMY_SQLITE_ARGS = ("timeout", "uri", "check_same_thread", "isolation_level",
                           "detect_types", "cached_statements")


def _url_factory(url: str) -> tuple[Callable[[], Any], Dialect]:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"expected a URL like sqlite:///path or postgresql://..., got {url!r}")
    if scheme in ("sqlite", "sqlite+pysqlite"):
        path = rest[1:] if rest.startswith("/") else rest
        path, _, query = path.partition("?")
        if path in ("", ":memory:"):
            raise ValueError(
                "expected a SQLite file path (sqlite:///path/to/db), got an in-memory database "
                f"{url!r}: the relay's connection would not see the rows"
            )
        return _sqlite_factory(path, query, url), SQLITE
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        dsn = "postgresql://" + rest

        def connect() -> Any:
            try:
                import psycopg
            except ImportError as exc:
                if exc.name != "psycopg":
                    raise
                raise ImportError(f"a postgresql:// outbox needs psycopg 3: {_POSTGRES_INSTALL}") from exc
            return psycopg.connect(dsn)

        return connect, POSTGRES
    raise ValueError(f"expected a sqlite:// or postgresql:// URL, got {scheme}:// in {url!r}")


def dialect_of_dbapi(conn: Any) -> Dialect | None:
    """The dialect of a DB-API connection (sqlite3 or psycopg 3), or None."""
    conn = _unwrap(conn)
    if isinstance(conn, sqlite3.Connection):
        return SQLITE
    if _is_psycopg(conn):
        return POSTGRES
    return None


def _is_psycopg(conn: Any) -> bool:
    return type(conn).__module__.split(".")[0] == "psycopg"


def dialect_named(name: str) -> Dialect:
    if name == "sqlite":
        return SQLITE
    if name == "postgresql":
        return POSTGRES
    raise ValueError(f"expected a sqlite or postgresql database, got {name}")


def _unwrap(conn: Any) -> Any:
    """The driver connection behind a SQLAlchemy pool proxy (`engine.raw_connection()`)."""
    inner = getattr(conn, "driver_connection", None)
    return inner if inner is not None else conn


def _describe(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
