"""Fixtures of the trace tests: a SQLite store and an OTLP receiver writing into it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from choreoscope.collector.store import Store
from choreoscope.collector.traces.receiver import OtlpReceiver


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/traces.db").create()


@pytest.fixture
def receiver(store: Store) -> Iterator[OtlpReceiver]:
    r = OtlpReceiver(store, port=0).start()
    yield r
    r.stop()
