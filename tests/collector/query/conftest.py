"""A filled store on SQLite and on PostgreSQL: every query must agree on both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from choreoscope.collector.store import Store, metadata
from tests.collector.query._data import fill


@pytest.fixture(scope="module")
def _module_postgres_url(_pg_admin: str) -> Iterator[str]:
    """One PostgreSQL database per test module (creating one per test is slow); `store`
    empties it before every test."""
    import psycopg

    name = f"csq_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield _pg_admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(_pg_admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The rows of `_data` in a fresh store (SQLite file, or an emptied PostgreSQL database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("_module_postgres_url")
    s = Store(url)
    metadata.drop_all(s.engine)
    fill(s)
    yield s
    s.dispose()
