"""A clean synthetic run of 1,000 five-hop flows, shared by every detector's clean-traffic test."""

from __future__ import annotations

from typing import Any

import pytest

from tests.collector.reconstruct.factory import clean_store, load_flows


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """(store, {flow id: (Flow, Dag)}) of 1,000 clean flows."""
    store = clean_store(tmp_path_factory.mktemp("clean"))
    return store, load_flows(store)
