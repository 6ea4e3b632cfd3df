"""`choreoscope collect` survives a native crash of its worker process (supervise.py).

The first tests run the supervisor on small worker scripts; the last ones run the real
collector on the embedded broker: a worker that segfaults mid-ingest is replaced and every
event ends up stored exactly once, and deleting a subscribed topic (which crashes librdkafka
on the embedded broker) does not stop ingest of the other topics.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from sqlalchemy import func, select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events
from choreoscope.collector.supervise import supervise
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop
from tests.reliability._wait import wait_for

# A worker that appends its pid to `runs` and then, on its first `crashes` runs, segfaults
# (a real fault in native code: reading address 0), else exits with `status`.
WORKER = """
import ctypes, os, sys
runs, crashes, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(runs, "a") as f:
    f.write(f"{os.getpid()}\\n")
if len(open(runs).read().split()) <= crashes:
    ctypes.string_at(0)
sys.exit(status)
"""


def _worker(tmp_path: Path, crashes: int, status: int = 0) -> tuple[list[str], Path]:
    runs = tmp_path / "runs"
    return [sys.executable, "-c", WORKER, str(runs), str(crashes), str(status)], runs


def _runs(runs: Path) -> int:
    return len(runs.read_text().split()) if runs.exists() else 0


def _deaths(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "died by" in r.getMessage()]


def test_a_worker_that_segfaults_is_started_again(tmp_path, caplog) -> None:
    cmd, runs = _worker(tmp_path, crashes=3)
    with caplog.at_level(logging.INFO, "choreoscope.collector"):
        assert supervise(cmd, backoff_s=0.1, max_backoff_s=0.2) == 0
    pids = runs.read_text().split()
    assert len(pids) == 4
    # the delay doubles, up to the maximum
    assert _deaths(caplog) == [
        f"collector worker (pid {pid}) died by SIGSEGV; starting a new one in {delay}s "
        "(it reads again what was not stored)"
        for pid, delay in zip(pids, ("0.1", "0.2", "0.2"), strict=False)
    ]


def test_the_delay_starts_over_after_a_worker_ran_long_enough(tmp_path, caplog) -> None:
    cmd, runs = _worker(tmp_path, crashes=3)
    with caplog.at_level(logging.INFO, "choreoscope.collector"):
        assert supervise(cmd, backoff_s=0.1, max_backoff_s=10, stable_s=0) == 0
    assert _runs(runs) == 4
    assert [m.split(" in ")[1][:4] for m in _deaths(caplog)] == ["0.1s", "0.1s", "0.1s"]


def test_a_worker_exiting_by_itself_is_not_restarted(tmp_path) -> None:
    cmd, runs = _worker(tmp_path, crashes=0, status=3)
    assert supervise(cmd, backoff_s=0.1) == 3
    assert _runs(runs) == 1


def test_the_signal_handlers_are_given_back(tmp_path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    cmd, _runs_file = _worker(tmp_path, crashes=0)
    supervise(cmd)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# A supervisor (in its own process) of a worker that records its pid, then waits for SIGTERM
# and writes which signal it got.
SUPERVISED = """
import sys
from choreoscope.collector.supervise import supervise
worker = '''
import os, signal, sys, time
out = sys.argv[1]
def done(signum, frame):
    open(out + ".signal", "w").write(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
open(out + ".pid", "w").write(str(os.getpid()))
while True:
    time.sleep(0.05)
'''
sys.exit(supervise([sys.executable, "-c", worker, sys.argv[1]]))
"""


def _supervised(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "worker"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(out)])
    wait_for("the worker to start", lambda: Path(f"{out}.pid").exists(), 30)
    return proc, out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie nobody reaped has exited too


def test_sigterm_is_passed_on_to_the_worker(tmp_path) -> None:
    proc, out = _supervised(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert Path(f"{out}.signal").read_text() == "SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_worker_dies_with_its_supervisor(tmp_path) -> None:
    proc, out = _supervised(tmp_path)
    pid = int(Path(f"{out}.pid").read_text())
    assert _alive(pid)
    proc.kill()
    proc.wait(30)
    wait_for("the worker to die with its supervisor", lambda: not _alive(pid), 10)
    assert not Path(f"{out}.signal").exists()  # killed at once, not asked to stop


# -- the real collector -------------------------------------------------------------------


def _collect(url: str, bootstrap: str, topics: str, group: str) -> list[str]:
    return [sys.executable, "-m", "choreoscope.collector.cli", "--store", url, "collect",
            "--bootstrap", bootstrap, "--topics", topics, "--group", group,
            "--otlp-port", "0", "--batch-size", "50", "--analyze-interval", "3600",
            "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
            "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"]


def _produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(first, first + count):
        p.produce(topic, value=b'{"n":%d}' % i, headers=[
            ("ce_specversion", b"1.0"), ("ce_id", b"ev-%d" % i), ("ce_type", b"order.placed"),
            ("ce_source", b"shop"), ("ce_time", b"2026-01-01T00:00:00Z"),
            ("ce_schemaversion", b"1")])
    assert p.flush(60) == 0


def _produce_until(bootstrap: str, topic: str, done: threading.Event) -> None:
    first = 100
    while not done.is_set():
        _produce(bootstrap, topic, first, 20)
        first += 20


def _stored(url: str) -> tuple[int, int]:
    """(rows, distinct event ids) in `events`; zeros before the schema exists."""
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return tuple(conn.execute(select(func.count(), func.count(func.distinct(
                events.c.event_id))).select_from(events)).one())
    except Exception:  # noqa: BLE001 - the table is not created yet
        return (0, 0)
    finally:
        store.dispose()


def _worker_pid(supervisor: int) -> int | None:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return int(children[0]) if children else None


@pytest.mark.broker
def test_collect_replaces_a_worker_that_segfaults_and_stores_every_event_once(
        bootstrap, topic, group, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    _produce(bootstrap, topic, 0, 300)
    log = tmp_path / "collect.log"
    with log.open("w") as err:
        proc = subprocess.Popen(_collect(url, bootstrap, f"^{topic}$", group), stderr=err)
    try:
        wait_for("the first events stored", lambda: _stored(url)[0] > 0)
        first = _worker_pid(proc.pid)
        assert first is not None
        os.kill(first, signal.SIGSEGV)
        wait_for("a new worker", lambda: _worker_pid(proc.pid) not in (None, first), 30)
        _produce(bootstrap, topic, 300, 200)
        wait_for("every event stored", lambda: _stored(url)[0] >= 500)
        time.sleep(1)  # nothing more arrives
        assert _stored(url) == (500, 500)
    finally:
        stop(proc)
    assert proc.returncode == 0
    text = log.read_text()
    assert f"collector worker (pid {first}) died by SIGSEGV" in text
    assert text.count("collector worker started") == 2


@pytest.mark.broker
def test_sigterm_to_the_process_group_stops_collect_cleanly(
        bootstrap, topic, group, tmp_path) -> None:
    """What `choreoscope demo` and a terminal do: the signal reaches the supervisor, the worker
    and the store writer at once; the batch in hand is still stored through the same writer."""
    url = f"sqlite:///{tmp_path}/g.db"
    _produce(bootstrap, topic, 0, 100)
    log = tmp_path / "collect.log"
    with log.open("w") as err:
        proc = subprocess.Popen(_collect(url, bootstrap, f"^{topic}$", group), stderr=err,
                                start_new_session=True)
    producing = threading.Event()
    producer = threading.Thread(target=_produce_until, args=(bootstrap, topic, producing))
    try:
        wait_for("the first events stored", lambda: _stored(url) == (100, 100))
        producer.start()  # batches are in hand when the signal comes
        wait_for("events produced meanwhile stored", lambda: _stored(url)[0] > 200)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        producing.set()
        if producer.is_alive():
            producer.join(30)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "SIGTERM received" in text
    assert "store unavailable" not in text
    assert "died by" not in text


@pytest.mark.broker
def test_collect_goes_on_when_a_subscribed_topic_is_deleted(
        bootstrap, topic, group, tmp_path) -> None:
    """On the embedded broker this deletion segfaults librdkafka in the worker; whatever the
    broker does, events on the other topics keep being stored."""
    doomed, kept = f"{topic}.doomed", f"{topic}.kept"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(doomed, 1, 1), NewTopic(kept, 1, 1)])
        _produce(bootstrap, doomed, 0, 10)
        _produce(bootstrap, kept, 10, 10)
        url = f"sqlite:///{tmp_path}/d.db"
        log = tmp_path / "collect.log"
        with log.open("w") as err:
            proc = subprocess.Popen(_collect(url, bootstrap, f"^{topic}\\..*", group), stderr=err)
        try:
            wait_for("both topics stored", lambda: _stored(url) == (20, 20))
            admin.delete_topics([doomed])
            time.sleep(2)
            _produce(bootstrap, kept, 20, 10)
            wait_for("events after the deletion stored", lambda: _stored(url) == (30, 30))
            assert proc.poll() is None
        finally:
            stop(proc)
        assert proc.returncode == 0, log.read_text()[-2000:]
    finally:
        admin.close()
