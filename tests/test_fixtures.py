"""The shared fixtures themselves: broker up and answering, PostgreSQL reachable."""

from __future__ import annotations

import os
import signal
import time

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer

from choreoscope.collector.broker import EmbeddedBroker
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS


@pytest.mark.broker
def test_broker_round_trip(bootstrap: str, topic: str, group: str) -> None:
    """A record sent to the embedded broker comes back to a consumer group."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(topic, b"hello", headers=[("ce_id", b"1")]).get(10)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        consumer_timeout_ms=15000,
    )
    record = next(iter(consumer))
    consumer.close()
    assert (record.value, record.headers) == (b"hello", [("ce_id", b"1")])


@pytest.mark.broker
def test_broker_stop_leaves_no_process() -> None:
    """Stopping the launcher ends the broker process."""
    with EmbeddedBroker() as b:
        assert b.process is not None
        pid = b.process.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.broker
def test_broker_dies_with_its_parent() -> None:
    """A broker whose parent is SIGKILLed does not outlive it."""
    import subprocess
    import sys

    code = (
        "from choreoscope.collector.broker import EmbeddedBroker\n"
        "b = EmbeddedBroker().start()\n"
        "print(b.process.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child_pid, signal.SIGKILL)
    pytest.fail("broker outlived its killed parent")


@pytest.mark.postgres
def test_postgres_fresh_database(postgres_url: str) -> None:
    """Each test gets its own empty PostgreSQL database."""
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


@pytest.mark.broker
def test_broker_command_on_a_taken_or_impossible_port_says_so(bootstrap: str) -> None:
    """`choreoscope broker --port P` with P taken (here by the test broker) or out of range
    prints one line and exits 1, never "ready" with the other broker's answer."""
    import subprocess
    import sys

    taken = bootstrap.rsplit(":", 1)[1]
    for port, says in ((taken, f"cannot listen on 127.0.0.1:{taken}: Address already in use"),
                       ("99999", "expected a port from 1 to 65535, got 99999")):
        r = subprocess.run([sys.executable, "-m", "choreoscope.collector.cli", "broker",
                            "--port", port], capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"choreoscope broker: {says}\n")
