"""Open the store: SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, inspect, make_url, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.schema import CreateIndex

from . import schema
from .masking import mask_secrets, mask_url

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///choreoscope.db"
_URL_PREFIXES = ("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")


# Errors of the connection to the store, not of a row: retrying row by row would not help.
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, DisconnectionError)

# SQLSTATE of a table or column that is not there (PostgreSQL: the database was dropped and
# made again empty, or the schema of another version): no row can be stored, so a batch
# must wait, not be taken row by row as rejected rows. SQLite says so as OperationalError.
_SCHEMA_GONE = {"42P01", "42703", "3F000"}


def schema_missing(exc: BaseException) -> bool:
    """Whether `exc` says the store's tables (or columns) are not there."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(exc, DBAPIError) and code in _SCHEMA_GONE


def describe_error(exc: BaseException) -> str:
    """A database error in one line, without the SQL parameters (they may hold payloads)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).splitlines()[0][:300]}"
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


class StoreError(ValueError):
    """The store can never be used as it is (wrong URL, someone else's tables): retrying is
    pointless. The message says what was expected."""


def check_url(url: str) -> None:
    """Raise `StoreError` unless `url` names a store this collector can open."""
    if not isinstance(url, str) or not url.startswith(_URL_PREFIXES):
        raise StoreError(
            f"expected a sqlite:///PATH or postgresql://... store URL, got {mask_url(url)!r}")
    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:  # a port that is not a number, say
        raise StoreError(f"expected a valid store URL, got {mask_url(url)!r}: "
                         f"{mask_secrets(str(exc))}") from None
    if url.startswith("sqlite:"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        if path and path != ":memory:" and os.path.isdir(path):
            raise StoreError(f"expected a SQLite file for the store, got the directory {path}")


def sqlite_file(url: str) -> str | None:
    """The file a `sqlite:///PATH` URL names, as written (relative to the working directory
    when relative); None for any other database, in-memory SQLite and `file:` URIs."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL at all: it names no file
        return None
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database \
            or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Store:
    """The collector's database. `Store(url).create()` creates or upgrades the schema."""

    def __init__(self, url: str = DEFAULT_URL, *, readonly: bool = False) -> None:
        self.url = normalize_url(url)
        self.readonly = readonly
        self.engine: Engine = _make_engine(self.url, readonly)
        self.dialect = self.engine.dialect.name  # "sqlite" | "postgresql"
        # The SQLite file the first connection opened, as (device, inode): `file_replaced`
        self._file = sqlite_file(self.url)
        self._file_id: tuple[int, int] | None = None
        if self._file is not None:
            event.listen(self.engine, "connect", self._note_file)

    def _note_file(self, _dbapi_conn: Any, _record: Any) -> None:
        if self._file_id is None and self._file is not None:
            with contextlib.suppress(OSError):
                found = os.stat(self._file)
                self._file_id = (found.st_dev, found.st_ino)

    def file_replaced(self) -> str | None:
        """What is wrong when this SQLite store's file is no longer the one it opened
        (deleted, or another file moved to its path): rows written now would go where no
        one can read them again. None when all is well, and for other databases."""
        if self._file_id is None or self._file is None:
            return None
        try:
            found = os.stat(self._file)
        except FileNotFoundError:
            what = "deleted"
        else:
            if (found.st_dev, found.st_ino) == self._file_id:
                return None
            what = "replaced by another file"
        return (f"the store file {self._file} was {what} while the collector ran; nothing "
                "more is stored or committed until the collector is restarted (it then "
                "creates the store anew)")

    def create(self) -> Store:
        """Create missing tables and indexes, drop retired indexes and record the schema
        version (idempotent): a store an earlier collector made is upgraded in place. Raises
        `StoreError` when a table of ours exists without our columns: the database holds
        someone else's tables of the same name."""
        schema.metadata.create_all(self.engine)
        self._upgrade_columns()
        self.check_columns()
        self._upgrade_indexes()
        with self.engine.begin() as conn:
            self._upsert(conn, schema.meta, [{"key": "schema_version",
                                              "value": str(schema.SCHEMA_VERSION)}], ["key"])
        return self

    def _upgrade_columns(self) -> None:
        """Columns added since the tables were made (`create_all` skips existing tables)."""
        found = inspect(self.engine)
        for name, added in schema.ADDED_COLUMNS.items():
            if not found.has_table(name):
                continue
            have = {c["name"] for c in found.get_columns(name)}
            for column in (schema.metadata.tables[name].c[c] for c in added if c not in have):
                log.info("store: adding column %s to %s (upgrade of an earlier store)",
                         column.name, name)
                kind = column.type.compile(dialect=self.engine.dialect)
                # IF NOT EXISTS (PostgreSQL): another collector starting beside us may be
                # faster; SQLite has no such clause, and locks the file for one of us at once
                guard = "IF NOT EXISTS " if self.dialect == "postgresql" else ""
                try:
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(
                            f"ALTER TABLE {name} ADD COLUMN {guard}{column.name} {kind}")
                except OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def _upgrade_indexes(self) -> None:
        """Indexes added since the tables were made (`create_all` skips existing tables with
        their indexes), and retired ones dropped."""
        found = inspect(self.engine)
        for table in schema.metadata.sorted_tables:
            have = {ix["name"] for ix in found.get_indexes(table.name)}
            for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                if index.name not in have:
                    log.info("store: creating index %s on %s (upgrade of an earlier store)",
                             index.name, table.name)
                    # IF NOT EXISTS: another collector starting beside us may be faster
                    with self.engine.begin() as conn:
                        conn.execute(CreateIndex(index, if_not_exists=True))
            for name in schema.RETIRED_INDEXES:
                if name in have:
                    log.info("store: dropping index %s, which this version no longer uses", name)
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")

    def check_columns(self, *, reading: bool = False) -> None:
        """Raise `StoreError` when a table of ours lacks our columns (SQLAlchemy's
        NoSuchTableError when one is missing altogether). `reading`: the collector's
        bookkeeping tables may be missing (an earlier collector made the store; the query
        layer never reads them)."""
        found = inspect(self.engine)
        for table in schema.metadata.sorted_tables:
            if reading and table.name in schema.BOOKKEEPING_TABLES and not found.has_table(
                    table.name):
                continue
            have = {c["name"] for c in found.get_columns(table.name)}
            if reading:  # columns added since: a store not upgraded yet is read without them
                have.update(schema.ADDED_COLUMNS.get(table.name, ()))
            missing = sorted(c.name for c in table.columns if c.name not in have)
            if missing:
                raise StoreError(
                    f"expected the store's table {table.name} to be Choreoscope's, but it has "
                    f"no column {', '.join(missing)}: use another database (or SQLite file)")

    def insert_ignore(self, conn: Any, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows, skipping those whose primary/unique key exists. Returns rows inserted."""
        if not rows:
            return 0
        if self.dialect == "postgresql":
            # psycopg reports rowcount -1 for executemany; count the rows actually inserted.
            key = next(iter(table.primary_key.columns))
            stmt = pg_insert(table).on_conflict_do_nothing().returning(key)
            return len(conn.execute(stmt, rows).all())
        result = conn.execute(sqlite_insert(table).on_conflict_do_nothing(), rows)
        return int(result.rowcount or 0)

    def upsert(self, conn: Any, table: Table, rows: list[Mapping[str, Any]],
               key: Iterable[str]) -> None:
        """Insert rows, replacing the non-key columns of rows whose key exists."""
        self._upsert(conn, table, rows, list(key))

    def _upsert(self, conn: Any, table: Table, rows: list[Mapping[str, Any]],
                key: list[str]) -> None:
        if not rows:
            return
        stmt = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(table)
        cols = [c for c in rows[0] if c not in key]
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_={c: stmt.excluded[c] for c in cols}
        ) if cols else stmt.on_conflict_do_nothing()
        conn.execute(stmt, rows)

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == key)
            ).scalar_one_or_none()

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, schema.meta, [{"key": key, "value": value}], ["key"])

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, readonly: bool) -> Engine:
    # hide_parameters: a database error (logged, shown) never carries payloads or ids.
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not readonly:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if not readonly:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            # A 64 MiB page cache (default 2 MiB) keeps the events indexes in memory while
            # batches are inserted: ~20% less per stored row once the file outgrows 2 MiB.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)
