"""End to end: instrumented services -> bus + OTLP -> `choreoscope collect` -> query CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from kafka import KafkaProducer

from choreoscope.collector.broker import free_port
from choreoscope.instrumentation import (
    Event,
    instrument_producer,
    setup_tracing,
    traced_consumer,
)
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.instrumentation._bus import consume

pytestmark = pytest.mark.broker

ORDERS = 4
FAILING = 2  # shipping's handler fails for this order


def _cli(url: str, *args: str) -> Any:
    r = subprocess.run([sys.executable, "-m", "choreoscope.collector.cli", "--store", url, *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _records(bootstrap: str, topic: str, count: int) -> list[Any]:
    """Every record of `topic` (all partitions from the start), in per-partition order."""
    records = consume(bootstrap, topic, count, timeout=60)
    assert len(records) == count
    return records


def test_instrumented_services_show_up_as_flows_graph_and_anomalies(bootstrap, tmp_path) -> None:
    """Three hops with a fan-out and one failing handler give the right flows, graph, anomalies."""
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    orders_t, payments_t = f"{prefix}.orders", f"{prefix}.payments"
    inventory_t, shipping_t = f"{prefix}.inventory", f"{prefix}.shipping"
    url = f"sqlite:///{tmp_path}/e2e.db"
    otlp = free_port()
    collector = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
         "--bootstrap", bootstrap, "--topics", rf"^{prefix}\..*", "--group", f"{prefix}-collector",
         "--otlp-port", str(otlp), "--analyze-interval", "1", "--stuck-after", "3600",
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        stderr=(tmp_path / "collector.log").open("w"))
    providers = []
    try:
        endpoint = f"http://127.0.0.1:{otlp}"
        services = {}
        for name in ("checkout", "payments", "inventory", "shipping"):
            provider = setup_tracing(name, endpoint=endpoint, set_global=False)
            providers.append(provider)
            services[name] = (instrument_producer(KafkaProducer(bootstrap_servers=bootstrap),
                                                  service=name, tracer_provider=provider),
                              provider)

        checkout, _ = services["checkout"]
        placed = [checkout.publish(orders_t, "order.placed", {"order": i, "email": "a@b.c"},
                                   key=f"ord_{i}") for i in range(ORDERS)]
        checkout.flush()

        pay, pay_provider = services["payments"]

        @traced_consumer(service="payments", group="payments", tracer_provider=pay_provider)
        def on_placed(event: Event) -> None:
            pay.publish(payments_t, "payment.captured", {"order": event.data["order"]},
                        key=event.subject)

        for record in _records(bootstrap, orders_t, ORDERS):
            on_placed(record)
        pay.flush()

        inv, inv_provider = services["inventory"]
        ship, ship_provider = services["shipping"]

        @traced_consumer(service="inventory", group="inventory", tracer_provider=inv_provider)
        def on_paid_reserve(event: Event) -> None:
            inv.publish(inventory_t, "inventory.reserved", {"order": event.data["order"]},
                        key=event.subject)

        @traced_consumer(service="shipping", group="shipping", tracer_provider=ship_provider)
        def on_paid_ship(event: Event) -> None:
            if event.data["order"] == FAILING:
                raise RuntimeError("no courier available")
            ship.publish(shipping_t, "shipment.scheduled", {"order": event.data["order"]},
                         key=event.subject)

        failures = 0
        for record in _records(bootstrap, payments_t, ORDERS):
            on_paid_reserve(record)
            try:
                on_paid_ship(record)
            except RuntimeError:
                failures += 1
        inv.flush()
        ship.flush()
        assert failures == 1
        for provider in providers:
            assert provider.force_flush(30_000)

        failing_flow = placed[FAILING].correlation_id
        expected_events = ORDERS * 4 - 1
        deadline = time.monotonic() + 120
        listed: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            listed = _cli(url, "flows", "--json") if (tmp_path / "e2e.db").exists() else []
            statuses = {f["correlation_id"]: f["status"] for f in listed}
            if (sum(f["event_count"] for f in listed) == expected_events
                    and statuses.get(failing_flow) == "failed"
                    and list(statuses.values()).count("completed") == ORDERS - 1):
                break
            time.sleep(0.5)
        statuses = {f["correlation_id"]: f["status"] for f in listed}
        assert statuses == {e.correlation_id: ("failed" if i == FAILING else "completed")
                            for i, e in enumerate(placed)}
        by_id = {f["correlation_id"]: f for f in listed}
        assert set(by_id[failing_flow]["event_types"]) == {
            "order.placed", "payment.captured", "inventory.reserved"}
        ok_flow = placed[0].correlation_id
        assert by_id[ok_flow]["event_count"] == 4
        assert set(by_id[ok_flow]["services"]) == {"checkout", "payments", "inventory",
                                                   "shipping"}
        assert len(by_id[ok_flow]["trace_ids"]) == 1

        flow = _cli(url, "flow", failing_flow, "--json")
        assert [e["type"] for e in flow["events"]].count("shipment.scheduled") == 0
        consumer_spans = [s for s in flow["spans"] if s.get("kind") == "consumer"]
        assert len(consumer_spans) == 3
        assert sorted((s["service"], s["status"]) for s in consumer_spans) == [
            ("inventory", "unset"), ("payments", "unset"), ("shipping", "error")]
        assert len(flow["spans"]) == 3 + 3  # three sends, three handlers

        found = _cli(url, "anomalies", "--json")
        assert [(a["kind"], a["correlation_id"], a["service"], a["group"]) for a in found] == [
            ("failed_handler", failing_flow, "shipping", "shipping")]

        graph = _cli(url, "graph", "--json")
        edges = {(e["source"], e["target"], e["kind"]): e["count"] for e in graph["edges"]}
        assert edges == {
            ("checkout", "order.placed", "emits"): ORDERS,
            ("order.placed", "payments", "consumed_by"): ORDERS,
            ("payments", "payment.captured", "emits"): ORDERS,
            ("payment.captured", "inventory", "consumed_by"): ORDERS,
            ("payment.captured", "shipping", "consumed_by"): ORDERS,
            ("inventory", "inventory.reserved", "emits"): ORDERS,
            ("shipping", "shipment.scheduled", "emits"): ORDERS - 1,
        }
    finally:
        for provider in providers:
            provider.shutdown()
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(60)
        finally:
            if collector.poll() is None:
                collector.kill()
                collector.wait()
    assert collector.returncode == 0
