"""The dashboard on a store filled by a real collector run: instrumented services on the
embedded broker, spans through the collector's OTLP receiver, `choreoscope collect --once`."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

import choreoscope.dashboard
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import spans
from choreoscope.collector.traces.receiver import OtlpReceiver
from choreoscope.dashboard.components.fmt import md
from choreoscope.instrumentation import (
    Event,
    instrument_producer,
    setup_tracing,
    traced_consumer,
)
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.instrumentation._bus import consume

pytestmark = pytest.mark.broker

APP = str(Path(choreoscope.dashboard.__file__).with_name("app.py"))
ORDERS = 3
FAILING = 2  # the shipping handler fails for this order


def _records(bootstrap: str, topic: str, count: int) -> list[Any]:
    """Every record of `topic` from the start (assigned partitions: no group join), by value."""
    records = consume(bootstrap, topic, count, timeout=60)
    assert len(records) == count
    return sorted(records, key=lambda r: r.value)


@pytest.fixture(scope="module")
def real(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three orders through order -> payment -> shipping; shipping fails one of them."""
    prefix = f"dash{uuid.uuid4().hex[:8]}"
    orders_t, payments_t, shipments_t = (f"{prefix}.orders", f"{prefix}.payments",
                                         f"{prefix}.shipments")
    url = f"sqlite:///{tmp_path_factory.mktemp('real') / 'store.db'}"
    store = Store(url).create()
    receiver = OtlpReceiver(store, port=0)
    receiver.start()
    endpoint = f"http://127.0.0.1:{receiver.port}"
    providers = {name: setup_tracing(name, endpoint=endpoint, set_global=False)
                 for name in ("order-service", "payment-service", "shipping-service")}
    producers = {name: instrument_producer(KafkaProducer(bootstrap_servers=bootstrap),
                                           service=name, tracer_provider=provider)
                 for name, provider in providers.items()}
    try:
        placed = [producers["order-service"].publish(
            orders_t, "order.placed", {"order": i, "card": "4111 1111 1111 1111"},
            key=f"ord_{i}", subject=f"ord_{i}") for i in range(ORDERS)]
        producers["order-service"].flush()

        @traced_consumer(service="payment-service", group="payments",
                         tracer_provider=providers["payment-service"])
        def on_placed(event: Event) -> None:
            producers["payment-service"].publish(payments_t, "payment.completed",
                                                 {"order": event.data["order"]},
                                                 key=event.subject, subject=event.subject)

        @traced_consumer(service="shipping-service", group="shipping",
                         tracer_provider=providers["shipping-service"])
        def on_paid(event: Event) -> None:
            if event.data["order"] == FAILING:
                raise RuntimeError("no courier available")
            producers["shipping-service"].publish(shipments_t, "order.shipped",
                                                  {"order": event.data["order"]},
                                                  key=event.subject, subject=event.subject)

        for record in _records(bootstrap, orders_t, ORDERS):
            on_placed(record)
        producers["payment-service"].flush()
        for record in _records(bootstrap, payments_t, ORDERS):
            with contextlib.suppress(RuntimeError):
                on_paid(record)
        producers["shipping-service"].flush()
        for provider in providers.values():
            assert provider.force_flush(30_000)
        expected_spans = ORDERS * 2 + ORDERS * 2 + (ORDERS - 1)  # sends + handlers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                if conn.execute(select(func.count()).select_from(spans)).scalar() >= \
                        expected_spans:
                    break
            time.sleep(0.2)
    finally:
        for provider in providers.values():
            provider.shutdown()
        receiver.stop()
        store.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
         "--bootstrap", bootstrap, "--topics", rf"^{prefix}\..*", "--group", f"{prefix}-c",
         "--otlp-port", "0", "--once", "--stuck-after", "3600",
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    yield {"url": url, "placed": placed, "ok": placed[0].correlation_id,
           "failed": placed[FAILING].correlation_id}


@pytest.fixture
def app_env(real: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("CHOREOSCOPE_STORE", real["url"])
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    return real


def _run(page: str = "overview", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_overview_counts_the_real_run(app_env: dict[str, Any]) -> None:
    """Eight events, two completed flows and one failed one, every event traced."""
    m = {x.label: x.value for x in _run().metric}
    assert m["Events stored"] == "8"
    assert m["Events with trace context"] == "100%"
    assert (m["Completed"], m["Failed"], m["Stuck"], m["Active"]) == ("2", "1", "0", "0")


def test_flow_map_has_the_learned_edges(app_env: dict[str, Any]) -> None:
    """The DOT drawn holds every hop of the choreography with its count; the hops after the
    first carry the latency of the reaction, the root event none."""
    dot = _run("flow_map").get("graphviz_chart")[0].proto.spec
    assert '"svc:order-service" -> "type:order.placed" [label="3"]' in dot
    assert '"type:order.placed" -> "svc:payment-service" [label="3, p95' in dot
    assert '"svc:payment-service" -> "type:payment.completed" [label="3, p95' in dot
    assert '"type:payment.completed" -> "svc:shipping-service" [label="3, p95' in dot
    assert '"svc:shipping-service" -> "type:order.shipped" [label="2, p95' in dot


def test_flows_page_lists_the_three_orders(app_env: dict[str, Any]) -> None:
    """The table lists each order's flow with its status."""
    df = _run("flows").dataframe[0].value
    statuses = dict(zip(df["correlation_id"], df["status"], strict=True))
    assert statuses == {e.correlation_id: ("failed" if i == FAILING else "completed")
                        for i, e in enumerate(app_env["placed"])}


def test_deep_link_shows_the_failed_flow(app_env: dict[str, Any]) -> None:
    """`?flow=<id>` of the failing order shows its events, spans and failed handler."""
    cid = app_env["failed"]
    at = _run(flow=cid)
    assert [s.value for s in at.subheader] == [f"Flow {md(cid)}"]
    m = {x.label: x.value for x in at.metric}
    assert (m["Events"], m["Services"]) == ("2", "3")
    assert int(m["Anomalies"]) >= 1
    tree = next(m.value for m in at.markdown if m.value.startswith("- **`order.placed`**"))
    assert tree.splitlines()[1].startswith("    - **`payment.completed`** by `payment-service`")
    spans_table = at.dataframe[-1].value
    assert sorted(spans_table.loc[spans_table["kind"] == "consumer", "status"]) == [
        "error", "unset"]


@pytest.mark.parametrize("page", ["out_of_order", "outbox", "variants", "event_health"])
def test_other_pages_render_on_the_real_run(app_env: dict[str, Any], page: str) -> None:
    """The remaining pages run to the end on the real store."""
    at = _run(page)
    assert at.title[0].value
