"""Redacted values, at any depth of nested objects and lists, in every envelope and in headers,
never reach the store, the CLI output or the dashboard's query layer.
(`tests/collector/test_redact.py` covers the Redactor alone; this goes through the running
collector.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer
from sqlalchemy import select

from choreoscope.collector.query import dashboard as dq
from choreoscope.collector.query import get_flow, list_flows
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

pytestmark = pytest.mark.broker

S = [f"SeCrEt-{i}-value" for i in range(12)]
NESTED = {
    "order": {"id": "o-1", "customer": {"email": S[0], "Phone": S[1],
                                        "addresses": [{"street": "Main", "token": S[2]}]}},
    "payments": [{"card": {"number": S[3], "cvc": "1"}}, {"card": S[4]},
                 [[{"password": S[5]}]]],
    "credentials": {"secret": {"deep": [S[6]]}},
    "API_TOKEN": S[7],
    "notes": ["keep me"],
}
HEADERS = [("ce_specversion", b"1.0"), ("ce_type", b"order.placed"), ("ce_source", b"shop"),
           ("ce_time", b"2026-01-01T00:00:00Z"), ("ce_schemaversion", b"1"),
           ("ce_correlationid", b"flow-r"), ("x-auth-token", S[8].encode()),
           ("X-Client-Secret", S[9].encode())]


def _records() -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    structured = {"specversion": "1.0", "id": "ev-s", "type": "order.paid", "source": "shop",
                  "time": "2026-01-01T00:00:01Z", "correlationid": "flow-r", "causationid": "ev-b",
                  "data": {"lines": [{"card": S[10]}]}}
    hand = {"eventId": "ev-h", "eventType": "order.shipped", "version": "1", "source": "shop",
            "timestamp": "2026-01-01T00:00:02Z", "correlationId": "flow-r", "causationId": "ev-s",
            "data": {"courier": {"phone": S[11]}}}
    big = {**NESTED, "padding": "x" * 200_000}  # over the size cap: a preview is stored
    return [
        (json.dumps(NESTED).encode(), [("ce_id", b"ev-b"), *HEADERS]),
        (json.dumps(structured).encode(), [("content-type", b"application/cloudevents+json")]),
        (json.dumps(hand).encode(), []),
        (json.dumps(big).encode(), [("ce_id", b"ev-big"), *HEADERS]),
    ]


def _no_secret(text: str, where: str) -> None:
    for secret in S:
        assert secret not in text, f"{secret} in {where}"


def test_redacted_values_reach_nothing(bootstrap, topic, group, tmp_path) -> None:
    """After ingest, no secret is in any stored column, CLI output or dashboard query result."""
    p = Producer({"bootstrap.servers": bootstrap})
    for value, headers in _records():
        p.produce(topic, value=value, headers=headers, key=b"o-1", partition=0)
    assert p.flush(30) == 0
    url = f"sqlite:///{tmp_path}/redact.db"
    r = subprocess.run(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect", "--once",
         "-v", "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group,
         "--otlp-port", "0",
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    _no_secret(r.stdout + r.stderr, "collect logs")

    store = Store(url)
    with store.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(events))]
    assert len(rows) == 4
    _no_secret(json.dumps(rows, default=str), "the events table")
    first = next(row for row in rows if row["event_id"] == "ev-b")
    data = json.loads(first["data"])
    assert data["notes"] == ["keep me"] and data["order"]["id"] == "o-1"
    assert data["order"]["customer"]["addresses"][0]["street"] == "Main"
    assert json.loads(first["headers"])["ce_type"] == "order.placed"
    big = next(row for row in rows if row["event_id"] == "ev-big")
    assert big["data_truncated"] and "preview" in json.loads(big["data"])

    for args in (["flows", "--json"], ["flow", "flow-r", "--json"], ["flow", "flow-r"],
                 ["anomalies", "--json"], ["graph", "--json"]):
        out = subprocess.run([sys.executable, "-m", "choreoscope.collector.cli", "--store", url,
                              *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        _no_secret(out.stdout + out.stderr, " ".join(args))

    shown = [list_flows(store), get_flow(store, "flow-r"), dq.flow_headers(store, "flow-r"),
             dq.flow_anomalies(store, "flow-r"), dq.event_health(store),
             dq.overview(store, now_ms=2_000_000_000_000)]
    _no_secret(json.dumps(shown, default=str), "the dashboard's queries")
    assert dq.flow_headers(store, "flow-r")  # the headers are there, only redacted
    store.dispose()
