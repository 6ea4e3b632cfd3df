"""SQL-injection strings through the CLI arguments and the dashboard's own query functions are
plain values: no match, no error from the database, no change to the store.
(`tests/collector/query/test_injection.py` covers every filter of the shared query layer.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from choreoscope.collector.query import dashboard as dq
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, flows, outbox_sources, spans
from tests.collector.query.test_injection import ATTACKS
from tests.dashboard.store_rows import fill

TABLES = (events, flows, spans, anomalies, outbox_sources)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        u = f"sqlite:///{tmp_path}/inj.db"
    else:
        u = request.getfixturevalue("postgres_url")
    fill(u).dispose()
    return u


def _sizes(url: str) -> tuple[int, ...]:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()
                         for t in TABLES)
    finally:
        store.dispose()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "choreoscope.collector.cli", "--store", url,
                           *args], capture_output=True, text=True, timeout=60)


CLI_ATTACKS = [a for a in ATTACKS if "\x00" not in a]  # argv cannot carry NUL


def test_cli_arguments_are_values(url: str) -> None:
    """flows --status, flow ID and anomalies --kind with attack strings match nothing, harm nothing."""
    before = _sizes(url)
    for attack in CLI_ATTACKS:
        r = _cli(url, "flows", "--status", attack, "--json")  # a closed set of choices
        assert r.returncode == 2 and "invalid choice" in r.stderr, r.stderr
        r = _cli(url, "flow", attack, "--json")
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        r = _cli(url, "anomalies", "--kind", attack, "--json")
        assert (r.returncode == 2 and "invalid choice" in r.stderr) or \
            (r.returncode == 0 and json.loads(r.stdout) == []), r.stderr
    assert _sizes(url) == before
    r = _cli(url, "flows", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == before[1]


def test_dashboard_filters_are_values(url: str) -> None:
    """The dashboard's query functions taking user input treat attack strings as values."""
    before = _sizes(url)
    store = dq.open_readonly(url)
    try:
        for attack in ATTACKS:
            assert dq.flow_anomalies(store, attack) == []
            assert dq.flow_headers(store, attack) == {}
            for name in ("group", "subject", "subkind"):
                assert dq.out_of_order(store, **{name: attack}) == {"total": 0, "rows": []}
            assert dq.anomalies_per_minute(store, kind=attack, since_ms=0) == \
                dq.anomalies_per_minute(store, kind="-", since_ms=0)
            assert dq.anomalies_over_time(store, kind=attack) == \
                dq.anomalies_over_time(store, kind="-")
    finally:
        store.dispose()
    assert _sizes(url) == before
