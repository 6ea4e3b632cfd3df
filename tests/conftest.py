"""Shared fixtures: the real embedded broker, a real PostgreSQL database, captured spans.

Under CI=true a fixture whose service cannot be had fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Consumer-group joins take about half the session timeout; keep them short in tests.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
PG_ADMIN_URL = os.environ.get("CHOREOSCOPE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(what: str, why: object) -> None:
    """Fail under CI, skip elsewhere: CI must never pass by skipping real services."""
    message = f"{what} unavailable: {why}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def broker() -> Iterator[object]:
    """One embedded Tansu broker for the whole session."""
    from choreoscope.collector.broker import BrokerError, EmbeddedBroker

    b = EmbeddedBroker()
    try:
        b.start()
    except BrokerError as exc:
        unavailable("embedded broker", exc)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def bootstrap(broker: object) -> str:
    """`host:port` of the session's broker."""
    return broker.bootstrap  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test (the broker auto-creates it on first use)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]
    return f"t.{name}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def group(request: pytest.FixtureRequest) -> str:
    """A consumer group name unique to this test."""
    return f"g-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def _pg_admin() -> str:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001
        unavailable("PostgreSQL at 127.0.0.1:5432", exc)
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(_pg_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test (`postgresql://...` URL), dropped after."""
    import psycopg

    name = f"cs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield _pg_admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(_pg_admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A provider exporting synchronously to `span_exporter` (not installed globally)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()
