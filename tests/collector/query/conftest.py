"""A filled store on SQLite and on PostgreSQL: every query must agree on both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from choreoscope.collector.store import Store
from tests.collector.query._data import fill


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The rows of `_data` in a fresh store (SQLite file, or a fresh PostgreSQL database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = fill(Store(url))
    yield s
    s.dispose()
