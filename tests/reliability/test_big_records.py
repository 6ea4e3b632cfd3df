"""Records of 1 MB, tombstones (null values) and other odd records in the middle of one batch:
every record of the batch is stored, the big data capped with a marker, nothing held back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer
from sqlalchemy import select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

pytestmark = pytest.mark.broker
MB = 1_000_000
HEADERS = [("ce_specversion", b"1.0"), ("ce_type", b"order.placed"), ("ce_source", b"shop"),
           ("ce_time", b"2026-01-01T00:00:00Z"), ("ce_schemaversion", b"1")]


def _h(eid: str) -> list[tuple[str, bytes]]:
    return [("ce_id", eid.encode()), *HEADERS]


def test_big_records_and_tombstones_in_one_batch(bootstrap, topic, group, tmp_path) -> None:
    """1 MB JSON and binary values, tombstones and a lone-surrogate value all stored in order."""
    big_json = json.dumps({"blob": "x" * (MB - 20), "card": "4111"}).encode()
    records = [
        ("small-0", b'{"n":0}', _h("ev-0")),
        ("big-json", big_json, _h("ev-big")),
        ("tombstone", None, _h("ev-tomb")),
        ("bare-tombstone", None, None),
        ("big-binary", bytes(range(256)) * (MB // 256), _h("ev-bin")),
        ("surrogate", b'{"s":"\\ud800"}', _h("ev-sur")),
        ("small-1", b'{"n":1}', _h("ev-1")),
    ]
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 3 * MB})
    for key, value, headers in records:
        p.produce(topic, key=key.encode(), value=value, headers=headers, partition=0)
    assert p.flush(30) == 0
    url = f"sqlite:///{tmp_path}/big.db"
    r = subprocess.run(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
         "--bootstrap", bootstrap, "--topics", f"^{topic}$", "--group", group, "--once",
         "--otlp-port", "0",
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"],
        capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rejected" not in r.stderr  # the batch went in whole, not row by row
    store = Store(url)
    with store.engine.connect() as conn:
        rows = {row.key: row for row in conn.execute(
            select(events).where(events.c.topic == topic).order_by(events.c.offset))}
    store.dispose()
    assert list(rows) == [key for key, _v, _h in records]
    big = rows["big-json"]
    assert (big.event_id, big.data_size, big.data_truncated) == ("ev-big", len(big_json), True)
    marker = json.loads(big.data)
    assert marker["_truncated"] is True and "4111" not in big.data
    assert rows["big-binary"].data_truncated and rows["big-binary"].data_size == MB // 256 * 256
    for key in ("tombstone", "bare-tombstone"):
        assert (rows[key].data, rows[key].data_truncated) == (None, False)
    assert rows["tombstone"].event_id == "ev-tomb"
    assert rows["bare-tombstone"].event_id is None and rows["bare-tombstone"].problems
    assert json.loads(rows["surrogate"].data) == {"s": "\ud800"}
    assert json.loads(rows["small-1"].data) == {"n": 1}
