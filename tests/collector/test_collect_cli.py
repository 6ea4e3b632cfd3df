"""`choreoscope collect`: settings lookup, --once, SIGTERM flush, failing side parts, secrets."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from choreoscope.collector.broker import free_port
from choreoscope.collector.settings import CollectSettings, SettingsError, lookup
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events, flows
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

FAST = ["--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
        "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "choreoscope.collector.cli", *args]


def _collect(store_url: str, bootstrap: str, topic: str, group: str, *extra: str) -> list[str]:
    return _cli("--store", store_url, "collect", "--bootstrap", bootstrap, "--topics",
                f"^{topic}$", "--group", group, "--otlp-port", "0", *FAST, *extra)


def _produce_flows(bootstrap: str, topic: str, flows_: int) -> int:
    """Three events per flow: placed -> paid -> shipped, chained by causation ids."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    count = 0
    for f in range(flows_):
        cause = None
        for step, kind in enumerate(("order.placed", "payment.captured", "order.shipped")):
            eid = f"e-{f}-{step}"
            headers = [("ce_specversion", b"1.0"), ("ce_id", eid.encode()),
                       ("ce_type", kind.encode()), ("ce_source", b"shop"),
                       ("ce_time", f"2026-01-01T00:00:0{step}Z".encode()),
                       ("ce_schemaversion", b"1"), ("ce_correlationid", f"c-{f}".encode())]
            if cause:
                headers.append(("ce_causationid", cause.encode()))
            p.produce(topic, value=json.dumps({"n": f, "email": "x@y"}).encode(),
                      headers=headers, key=f"ord_{f}".encode())
            cause = eid
            count += 1
    p.flush(30)
    return count


def _count(store_url: str, table=events) -> int:
    store = Store(store_url)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar())
    finally:
        store.dispose()


def _stored_so_far(store_url: str) -> int:
    """Events stored yet; 0 while the collector has not created its store (file or tables)."""
    try:
        return _count(store_url)
    except OperationalError:
        return 0


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=10))
    finally:
        c.close()


# -- settings (no services) ------------------------------------------------------------------


def test_lookup_order_is_argument_then_env_then_default() -> None:
    """An argument beats the environment, which beats the default; strings are converted."""
    env = {"CHOREOSCOPE_SKEW": "2.5", "CHOREOSCOPE_GROUP": "from-env"}
    assert lookup("skew", None, env) == 2.5
    assert lookup("skew", "0.5", env) == 0.5
    assert lookup("skew", None, {}) == 1.0
    assert lookup("group", None, env) == "from-env"
    settings = CollectSettings.resolve(env=env, group="arg", kafka_option=["a=b", "c=d=e"],
                                       outbox=["o=sqlite:///x.db"])
    assert (settings.group, settings.skew, settings.start) == ("arg", 2.5, "earliest")
    assert settings.kafka_options == {"a": "b", "c": "d=e"}
    assert settings.outbox == ("o=sqlite:///x.db",)
    assert CollectSettings.resolve(env={}, topics="orders\\..*").topic_pattern == "^orders\\..*"


def test_stuck_after_per_type_reaches_the_settings() -> None:
    """--stuck-after-type TYPE=SECONDS values are parsed into (type, seconds) pairs."""
    settings = CollectSettings.resolve(env={}, stuck_after_type=["order.placed=5", "a.b=c=1.5"])
    assert settings.stuck_after_type == (("order.placed", 5.0), ("a.b=c", 1.5))


def test_bad_values_are_rejected_with_expected_and_got() -> None:
    """A bad setting names the variable, what was expected and what was given."""
    with pytest.raises(SettingsError, match=r"from \(CHOREOSCOPE_FROM\): expected .*got 'middle'"):
        lookup("from", "middle", {})
    with pytest.raises(SettingsError, match="CHOREOSCOPE_OTLP_PORT"):
        lookup("otlp_port", None, {"CHOREOSCOPE_OTLP_PORT": "99999"})
    with pytest.raises(SettingsError, match=r"batch_size .*got '1000001' \(more than 1,000,000\)"):
        lookup("batch_size", "1000001", {})
    assert lookup("batch_size", "1000000", {}) == 1_000_000
    with pytest.raises(SettingsError, match="got 'nokeyvalue'"):
        lookup("kafka_option", ["nokeyvalue"], {})
    with pytest.raises(SettingsError, match="expected distinct source names, got a more than once"):
        CollectSettings.resolve(env={}, outbox=["a=sqlite:///x.db", "b=sqlite:///z.db",
                                                "a=sqlite:///y.db"])


def test_cli_rejects_bad_configuration_at_start_up(tmp_path) -> None:
    """Bad options exit 2 with the reason, before connecting to anything."""
    for bad in (["--from", "middle"], ["--outbox", "no-equals-sign"], ["--topics", "(["],
                ["--kafka-option", "no.such.property=1"],
                ["--outbox", "o=sqlite:///o.db", "--outbox-stuck-after", "0"],
                ["--outbox", "a=sqlite:///x.db", "--outbox", "a=sqlite:///y.db"]):
        r = subprocess.run(_cli("--store", f"sqlite:///{tmp_path}/x.db", "collect", *bad),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (bad, r.stderr)
        assert "expected" in r.stderr
        assert "Traceback" not in r.stderr


def test_bad_numbers_and_urls_are_rejected_at_start_up(tmp_path) -> None:
    """Not-a-number, infinite or absurd durations and a Jaeger URL that is none exit 2."""
    for bad, says in ((["--stuck-after", "nan"], "not a finite number"),
                      (["--skew", "inf"], "not a finite number"),
                      (["--retention", "1e308"], "more than"),
                      (["--jaeger", "notaurl"], "not an http:// or https:// URL")):
        r = subprocess.run(_cli("--store", f"sqlite:///{tmp_path}/x.db", "collect", *bad),
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode, says in r.stderr) == (2, True), (bad, r.stderr)


def test_stores_that_can_never_work_end_the_run_at_once(tmp_path) -> None:
    """A URL of another database, a directory, a path nothing can create, or a SQLite file
    with someone else's `events` table: one line and a non-zero exit, not retries forever."""
    import sqlite3

    theirs = tmp_path / "theirs.db"
    conn = sqlite3.connect(theirs)
    conn.execute("create table events (id integer primary key, what text)")
    conn.close()
    for url, code, says in (
            ("mysql://u:pw@h/db", 2, "expected a sqlite:///PATH or postgresql://... store URL, "
                                     "got 'mysql://u:***@h/db'"),
            (f"sqlite:///{tmp_path}", 2, f"expected a SQLite file for the store, got the "
                                         f"directory {tmp_path}"),
            ("sqlite:////proc/no/such.db", 1, "cannot open the store sqlite:////proc/no/such.db"),
            (f"sqlite:///{theirs}", 1, "expected the store's table events to be Choreoscope's, "
                                       "but it has no column broker_ts_ms, causation_id")):
        for mode in (["--once"], []):
            r = subprocess.run(_cli("--store", url, "collect", "--bootstrap", "127.0.0.1:1",
                                    "--otlp-port", "0", *mode),
                               capture_output=True, text=True, timeout=60)
            assert (r.returncode, says in r.stderr) == (code, True), (url, mode, r.stderr)
            assert "Traceback" not in r.stderr and "retrying" not in r.stderr


@pytest.mark.postgres
def test_once_gives_up_on_an_unreachable_postgresql(tmp_path, monkeypatch) -> None:
    """--once waits a little for a PostgreSQL server, then exits 1 naming it (no password)."""
    from choreoscope.collector import runtime

    monkeypatch.setattr(runtime, "_ONCE_STORE_WAIT_S", 1.0)
    port = free_port()
    collector = runtime.Collector(f"postgresql://alice:s3cret@127.0.0.1:{port}/x",
                                  CollectSettings.resolve(env={}, bootstrap="127.0.0.1:1"))
    started = time.monotonic()
    assert collector.run_once() == 1
    assert time.monotonic() - started < 10


def test_once_with_the_broker_unreachable_exits_1(tmp_path) -> None:
    """--once against a broker that does not answer says so and exits 1."""
    r = subprocess.run(_cli("--store", f"sqlite:///{tmp_path}/d.db", "collect", "--bootstrap",
                            "127.0.0.1:1", "--once", "--otlp-port", "0"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "cannot read the bus at 127.0.0.1:1" in r.stderr
    assert r.stderr.count("brokers are down") <= 1


# -- against the broker ----------------------------------------------------------------------


@pytest.mark.broker
def test_once_ingests_everything_analyses_and_exits(bootstrap, topic, group, tmp_path) -> None:
    """--once stores every record on the topic, writes flows, commits, and exits 0."""
    n = _produce_flows(bootstrap, topic, 20)
    url = f"sqlite:///{tmp_path}/once.db"
    r = subprocess.run(_collect(url, bootstrap, topic, group, "--once"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (_count(url), _count(url, flows)) == (n, 20)
    assert _committed(bootstrap, group, topic) == n
    out = subprocess.run(_cli("--store", url, "flows", "--json"), capture_output=True,
                         text=True, timeout=60)
    listed = json.loads(out.stdout)
    assert sorted(f["correlation_id"] for f in listed) == sorted(f"c-{i}" for i in range(20))
    assert {f["event_count"] for f in listed} == {3}
    # Nothing new on the bus: a second --once reads nothing and changes nothing.
    r = subprocess.run(_collect(url, bootstrap, topic, group, "--once"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "read 0 records" in r.stderr
    assert _count(url) == n


@pytest.mark.broker
def test_outbox_max_attempts_sets_when_a_retried_row_is_stuck(bootstrap, topic, group,
                                                              tmp_path) -> None:
    """A young row tried 5 times is stuck by default (relays give up at 5), not when the
    relays are told to try 10 times (--outbox-max-attempts 10)."""
    from choreoscope.instrumentation.outbox import Outbox

    service = f"sqlite:///{tmp_path}/svc.db"
    outbox = Outbox(service, service="orders")
    outbox.create_table()
    with sqlite3.connect(f"{tmp_path}/svc.db") as conn:
        outbox.add(conn, aggregatetype="order", aggregateid="ord_1", event_type="order.placed",
                   data={})
        conn.execute("update outbox set attempts = 5")
    _produce_flows(bootstrap, topic, 1)  # a topic to read: --once then ends when it is read
    stuck = {}
    for name, extra in (("default", ()), ("ten", ("--outbox-max-attempts", "10"))):
        url = f"sqlite:///{tmp_path}/{name}.db"
        r = subprocess.run(_collect(url, bootstrap, topic, group, "--once", "--outbox",
                                    f"orders={service}", "--outbox-stuck-after", "3600", *extra),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out = subprocess.run(_cli("--store", url, "outbox", "--json"), capture_output=True,
                             text=True, timeout=60)
        stuck[name] = [(row["aggregateid"], row["attempts"], row["reason"])
                       for row in json.loads(out.stdout)[0]["stuck"]]
    assert stuck == {"default": [("ord_1", 5, "attempts")], "ten": []}


@pytest.mark.broker
def test_once_fetches_the_traces_of_what_it_read_from_jaeger(bootstrap, topic, group,
                                                            tmp_path) -> None:
    """--once --jaeger fetches the trace of a record it just read, without waiting for a
    settle delay no later pass would reach: the fetch is `found` with the trace's span."""
    from choreoscope.collector.store.schema import trace_fetches
    from tests.collector.traces.jaeger_server import FakeJaeger, Reply, fixture

    trace_id = "00000000000000000000000000000001"  # GetTrace.json: one span
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value=b'{"n": 1}', headers=[
        ("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_type", b"order.placed"),
        ("ce_source", b"shop"), ("ce_schemaversion", b"1"),
        ("traceparent", f"00-{trace_id}-00000000000000a1-01".encode())])
    p.flush(30)
    url = f"sqlite:///{tmp_path}/once.db"
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{trace_id}"] = Reply(body=fixture("GetTrace.json"))
        r = subprocess.run(_collect(url, bootstrap, topic, group, "--once", "--jaeger",
                                    jaeger.url), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"/api/v3/traces/{trace_id}" in jaeger.requests
    store = Store(url)
    with store.engine.connect() as conn:
        # (the fixture's span is years old: retention prunes it in the same run)
        assert conn.execute(select(trace_fetches.c.status, trace_fetches.c.span_count)
                            ).all() == [("found", 1)]
    store.dispose()


@pytest.mark.broker
def test_once_on_topics_not_there_yet_reads_nothing(bootstrap, group, tmp_path) -> None:
    """The broker's "no such topic" answer for a pattern that matches nothing is no record."""
    url = f"sqlite:///{tmp_path}/none.db"
    r = subprocess.run(_collect(url, bootstrap, "nothing-matches-this-yet.*", group, "--once"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "read 0 records, 0 new events stored" in r.stderr


@pytest.mark.broker
def test_sigterm_stores_commits_and_exits_zero(bootstrap, topic, group, tmp_path) -> None:
    """On SIGTERM the collector finishes its batch, commits what it stored, and exits 0."""
    url = f"sqlite:///{tmp_path}/term.db"
    metrics_port = free_port()
    proc = subprocess.Popen(_collect(url, bootstrap, topic, group, "--metrics-port",
                                     str(metrics_port), "--analyze-interval", "0.5"),
                            stderr=subprocess.PIPE, text=True)
    try:
        n = _produce_flows(bootstrap, topic, 50)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _stored_so_far(url) < n:
            time.sleep(0.3)
        body = ""
        while time.monotonic() < deadline and "choreoscope_events_ingested_total 150" not in body:
            time.sleep(0.3)
            body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                          timeout=5).read().decode()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err
    assert "choreoscope_events_ingested_total 150" in body
    assert _count(url) == n
    assert _committed(bootstrap, group, topic) == n


@pytest.mark.broker
def test_failing_side_parts_never_stop_ingest(bootstrap, topic, group, tmp_path) -> None:
    """Jaeger down, an unreachable outbox database and receiver and metrics ports taken by
    someone else are logged (naming the port); events are still stored."""
    import socket

    n = _produce_flows(bootstrap, topic, 5)
    url = f"sqlite:///{tmp_path}/side.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = subprocess.run(_collect(url, bootstrap, topic, group, "--once",
                                    "--jaeger", "http://127.0.0.1:1", "--otlp-port", port,
                                    "--metrics-port", port, "--outbox",
                                    "orders=postgresql://svc:pw-s3cret@127.0.0.1:1/orders"),
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _count(url) == n
    assert "pw-s3cret" not in r.stderr + r.stdout
    # errors, not warnings: ingest goes on, but what is sent to those ports is lost
    assert (f"ERROR choreoscope.collector: otlp receiver start failed: OSError: cannot "
            f"listen on 127.0.0.1:{port} (Address already in use): spans sent there are lost"
            ) in r.stderr
    assert (f"ERROR choreoscope.collector: metrics server start failed: OSError: "
            f"cannot listen on 127.0.0.1:{port} (Address already in use): no metrics; give a "
            "free --metrics-port") in r.stderr


def test_a_listener_that_cannot_bind_names_what_to_change() -> None:
    """A port taken asks for another port; a host that is no address of this machine asks
    for another host, not for a free port."""
    import socket

    from choreoscope.collector.runtime import _listen_hint

    with socket.socket() as taken, socket.socket() as other:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError) as in_use:
            other.bind(taken.getsockname())
    assert _listen_hint(in_use.value, "metrics") == "give a free --metrics-port"
    with socket.socket() as s, pytest.raises(OSError) as not_here:
        s.bind(("192.0.2.1", 0))  # TEST-NET-1: never an address of this machine
    assert _listen_hint(not_here.value, "otlp") == (
        "give --otlp-host an address of this machine (e.g. 127.0.0.1 or 0.0.0.0)")


@pytest.mark.broker
def test_secrets_never_reach_the_logs(bootstrap, topic, group, tmp_path) -> None:
    """Store passwords and SASL secrets given as options are masked in every log line."""
    proc = subprocess.Popen(
        _cli("--store", "postgresql://u:store-s3cret@127.0.0.1:1/x", "collect", "--bootstrap",
             bootstrap, "--topics", f"^{topic}$", "--group", group, "--otlp-port", "0",
             "--kafka-option", "sasl.password=sasl-s3cret"),
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    guard = threading.Timer(60, proc.kill)  # a collector that never logs a retry fails the test
    guard.start()
    for line in proc.stderr:  # until a store retry is logged (its handlers are set by then)
        seen.append(line)
        if "retrying" in line:
            break
    guard.cancel()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    err = "".join(seen) + err
    assert proc.returncode == 0, err
    assert "cannot open the store postgresql://u:***@127.0.0.1:1/x" in err and "retrying" in err
    assert "s3cret" not in out + err
    r = subprocess.run(_collect(f"sqlite:///{tmp_path}/s.db", bootstrap, topic, group, "--once",
                                "--kafka-option", "sasl.password=sasl-s3cret"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "'sasl.password': '***'" in r.stderr
    assert "s3cret" not in r.stdout + r.stderr
