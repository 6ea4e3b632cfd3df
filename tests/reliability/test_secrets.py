"""Database passwords and Kafka SASL credentials never appear in logs, CLI output or the
dashboard. (`tests/collector/test_collect_cli.py::test_secrets_never_reach_the_logs` covers the
collector's own start-up lines; this adds debug logs, failures, the environment, the query
commands, outbox errors and every dashboard page.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from choreoscope.collector.broker import free_port
from choreoscope.collector.query.dashboard import mask_secrets, mask_url
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

DB_SECRET = "db-pa55-Zq9"
SASL_SECRET = "sasl-pa55-Xw7"
OUTBOX_SECRET = "outbox-pa55-Kk3"
SECRETS = (DB_SECRET, SASL_SECRET, OUTBOX_SECRET)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "choreoscope.collector.cli", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _clean(r: subprocess.CompletedProcess[str]) -> None:
    out = r.stdout + r.stderr
    for secret in SECRETS:
        assert secret not in out, out[-3000:]


def _with_password(url: str, password: str = DB_SECRET) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.mark.broker
@pytest.mark.postgres
def test_collect_debug_logs_and_failures_hide_every_secret(bootstrap, topic, group,
                                                           postgres_url) -> None:
    """collect -v with a password store, a password outbox and SASL options prints none of them."""
    dead_outbox = f"postgresql://svc:{OUTBOX_SECRET}@127.0.0.1:{free_port()}/svc"
    r = _cli("--store", _with_password(postgres_url), "collect", "-v", "--once",
             "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
             "--otlp-port", "0", "--outbox", f"orders={dead_outbox}",
             "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
             "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
             "--kafka-option", "sasl.username=svc",
             "--kafka-option", f"sasl.password={SASL_SECRET}")
    _clean(r)
    assert "***" in r.stderr
    # an option librdkafka refuses is reported without echoing the secret it held
    rejected = _cli("--store", _with_password(postgres_url), "collect", "--once",
                    "--bootstrap", bootstrap, "--otlp-port", "0",
                    "--kafka-option", f"sasl.jaas.config=x password=\"{SASL_SECRET}\";")
    assert rejected.returncode == 2
    _clean(rejected)
    # the outbox's failure is stored; the CLI shows it without the password
    r = _cli("--store", _with_password(postgres_url), "outbox", "--json")
    assert r.returncode == 0, r.stderr
    _clean(r)
    assert "orders" in r.stdout


@pytest.mark.broker
def test_sasl_against_a_plaintext_broker_hides_the_password(bootstrap, topic, group,
                                                            tmp_path) -> None:
    """SASL handshakes failing against the broker log errors without the password."""
    r = _cli("--store", f"sqlite:///{tmp_path}/s.db", "collect", "-v", "--once",
             "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
             "--otlp-port", "0",
             "--kafka-option", "security.protocol=SASL_PLAINTEXT",
             "--kafka-option", "sasl.mechanism=PLAIN",
             "--kafka-option", "sasl.username=svc",
             "--kafka-option", f"sasl.password={SASL_SECRET}",
             "--kafka-option", "socket.timeout.ms=3000")
    _clean(r)


def test_unreachable_store_with_password_in_env_and_option(tmp_path) -> None:
    """Query commands and collect on an unreachable password URL fail without showing it."""
    url = f"postgresql://cs:{DB_SECRET}@127.0.0.1:{free_port()}/nowhere"
    for args in (["flows"], ["flows", "--json"], ["flow", "x"], ["anomalies"], ["outbox"],
                 ["graph", "--dot"]):
        r = _cli("--store", url, *args, timeout=60)
        assert r.returncode != 0
        _clean(r)
        r = _cli(*args, env={"CHOREOSCOPE_STORE": url}, timeout=60)
        assert r.returncode != 0
        _clean(r)


@pytest.mark.postgres
def test_query_commands_on_a_password_store(postgres_url) -> None:
    """Every query command on a reachable store given with a password prints no password."""
    from choreoscope.collector.store import Store

    url = _with_password(postgres_url)
    Store(url).create().dispose()
    for args in (["flows"], ["flows", "--json"], ["anomalies", "--json"], ["outbox", "--json"],
                 ["graph", "--json"], ["graph", "--dot"]):
        r = _cli("--store", url, *args, timeout=60)
        assert r.returncode == 0, r.stderr
        _clean(r)


@pytest.mark.postgres
@pytest.mark.parametrize("reachable", [True, False])
def test_dashboard_pages_never_show_the_password(postgres_url, monkeypatch, reachable) -> None:
    """Every dashboard page, on a reachable or unreachable password URL, hides the password."""
    from streamlit.testing.v1 import AppTest

    from tests.dashboard.store_rows import fill
    from tests.dashboard.test_pages import APP, PAGES, text_of

    if reachable:
        url = _with_password(postgres_url)
        fill(url).dispose()
    else:
        url = f"postgresql://cs:{DB_SECRET}@127.0.0.1:{free_port()}/nowhere"
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    for page in PAGES:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        if page != "overview":
            at.switch_page(f"views/{page}.py").run()
        shown = text_of(at) + "\n".join(str(e.value) for e in at.exception) \
            + "\n".join(str(e.value) for e in at.code)
        assert DB_SECRET not in shown, (page, shown[-2000:])


def test_masking_helpers() -> None:
    """The helpers the dashboard and CLI use mask passwords in URLs and in free text."""
    assert DB_SECRET not in mask_url(f"postgresql://u:{DB_SECRET}@h:5432/db")
    assert DB_SECRET not in mask_url(f"postgresql://u:{DB_SECRET}@h:5432:bad")
    assert mask_secrets(f"could not connect to postgresql://u:{DB_SECRET}@h/db: refused") == \
        "could not connect to postgresql://u:***@h/db: refused"
