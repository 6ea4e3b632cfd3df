"""The collector's maintenance thread: guarded periodic tasks, analysis paced by its duration."""

from __future__ import annotations

import logging
import re
import time

import pytest

from choreoscope.collector.runtime import ANALYSIS_MAX_SHARE, Collector, _Task
from choreoscope.collector.settings import CollectSettings


@pytest.fixture
def collector(tmp_path) -> Collector:
    return Collector(f"sqlite:///{tmp_path}/m.db", CollectSettings.resolve(env={}))


def test_a_failing_periodic_task_does_not_stop_the_others(collector: Collector) -> None:
    """One maintenance task raising is logged and counted; the next task still runs."""
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("analysis bug")

    collector.tasks = [_Task("boom", 60, boom), _Task("ok", 60, lambda: ran.append("ok"))]
    collector.maintenance_pass(force=True)
    collector.maintenance_pass()  # nothing is due yet
    assert ([t.failures for t in collector.tasks], ran) == ([1, 0], ["ok"])


def test_a_bounded_task_rests_three_times_its_run_at_a_quarter() -> None:
    """The rest after a run is the interval, or run * (1/share - 1) when that is longer."""
    task = _Task("analysis", 5.0, lambda: None, max_share=0.25)
    assert task.schedule(100.0, 100.5) == 5.0
    assert task.next_at == 105.5
    assert task.schedule(200.0, 260.0) == 180.0  # a one-minute pass: three minutes of rest
    assert (task.next_at, task.last_duration_s) == (440.0, 60.0)
    unbounded = _Task("lag", 5.0, lambda: None)
    assert unbounded.schedule(0.0, 60.0) == 5.0


def test_the_analysis_task_is_paced(collector: Collector) -> None:
    """The collector's analysis pass is the task with the bound."""
    collector.store = object()  # type: ignore[assignment]  # _plan only reads settings
    tasks = {t.name: t for t in collector._plan()}
    assert tasks["analysis"].max_share == ANALYSIS_MAX_SHARE == 0.25
    assert tasks["analysis"].interval_s == 5.0
    assert all(t.max_share is None for name, t in tasks.items() if name != "analysis")


def test_retention_runs_before_the_analysis_in_a_pass_of_every_task(tmp_path) -> None:
    """`collect --once` runs each task once in plan order: pruning first, so the flows the
    pass writes are those of the events kept."""
    collector = Collector(f"sqlite:///{tmp_path}/p.db", CollectSettings.resolve(env={}))
    names = [t.name for t in collector._plan()]
    assert names.index("retention") < names.index("analysis")


def test_a_slow_pass_waits_before_the_next_and_says_so(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass longer than its interval is not followed at once by another."""
    runs: list[float] = []

    def slow() -> None:
        runs.append(time.monotonic())
        time.sleep(0.3)

    task = _Task("analysis", 0.05, slow, max_share=0.25)
    collector.tasks = [task]
    with caplog.at_level(logging.INFO, logger="choreoscope.collector"):
        collector.maintenance_pass()
    assert len(runs) == 1
    rest = task.next_at - time.monotonic()
    assert 0.6 < rest <= 3 * task.last_duration_s
    collector.maintenance_pass()  # due by the interval, not by the pacing: not run
    assert len(runs) == 1
    [message] = [r.getMessage() for r in caplog.records if "analysis took" in r.getMessage()]
    assert re.fullmatch(r"analysis took \d\.\ds; the next in \d+s \(at most 25% of the time\)",
                        message), message
    task.next_at = time.monotonic()
    collector.maintenance_pass()
    assert len(runs) == 2
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="choreoscope.collector"):
        collector.maintenance_pass(force=True)  # `--once`: no next pass to announce
    assert len(runs) == 3
    assert [r for r in caplog.records if "the next in" in r.getMessage()] == []


def test_orphan_and_untraced_waits_reach_the_analysis(tmp_path) -> None:
    """--orphan-after and --untraced-after set how long the analysis waits for a cause and for a
    trace: with 0 an effect whose cause was never seen is an orphan at once."""
    from tests.collector.reconstruct.factory import T0, ev, put

    settings = CollectSettings.resolve(env={}, orphan_after="0", untraced_after="30")
    assert (settings.orphan_after, settings.untraced_after) == (0.0, 30.0)
    defaults = CollectSettings.resolve(env={})
    assert (defaults.orphan_after, defaults.untraced_after) == (300.0, 120.0)
    collector = Collector(f"sqlite:///{tmp_path}/o.db", settings, clock=lambda: T0 / 1000 + 1)
    put(collector.open_store(), [ev("e2", "payment.authorized", flow="f1", cause="e-missing")])
    result = collector.analyze()
    assert result.anomalies_found.get("orphan") == 1
    collector.opened.dispose()


@pytest.mark.postgres
def test_a_schema_race_with_another_collector_is_retried(postgres_url, monkeypatch) -> None:
    """Two collectors creating one PostgreSQL schema at the same moment: the loser gets the
    server's duplicate-key error, which is retried (it ended the run before)."""
    from sqlalchemy.exc import IntegrityError

    from choreoscope.collector import runtime
    from choreoscope.collector.store import Store

    real_create, calls = Store.create, []

    def create_losing_once(self: Store) -> Store:
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("CREATE TABLE events", {}, Exception(
                'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'))
        return real_create(self)

    monkeypatch.setattr(Store, "create", create_losing_once)
    monkeypatch.setattr(runtime, "_STORE_RETRY_MAX_S", 0.1)
    collector = Collector(postgres_url, CollectSettings.resolve(env={}))
    store = collector.open_store(give_up_after_s=10)
    assert store is not None and len(calls) == 2
    store.dispose()


def test_a_long_analysis_pass_holds_back_no_other_task(collector: Collector) -> None:
    """While an analysis pass runs, the metrics (and every other task) keep their interval."""
    import threading

    in_pass, release = threading.Event(), threading.Event()
    refreshed: list[float] = []

    def long_pass() -> None:
        in_pass.set()
        assert release.wait(30)

    collector.tasks = [_Task("analysis", 5.0, long_pass, max_share=ANALYSIS_MAX_SHARE),
                       _Task("metrics", 0.1, lambda: refreshed.append(time.monotonic()))]
    collector.start_maintenance()
    try:
        assert in_pass.wait(10)
        seen = len(refreshed)
        deadline = time.monotonic() + 20
        while len(refreshed) < seen + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(refreshed) >= seen + 3  # refreshed during the pass
        assert not release.is_set()
    finally:
        release.set()
        collector.close()


def test_the_redaction_pattern_reaches_both_trace_sources(tmp_path) -> None:
    """`--redact` applies to span attributes stored from the OTLP receiver and from Jaeger."""
    import http.client
    import json

    from sqlalchemy import select

    from choreoscope.collector.broker import free_port
    from choreoscope.collector.store.schema import spans
    from tests.collector.traces.jaeger_server import FakeJaeger, Reply, fixture
    from tests.collector.traces.test_fetcher import add_event

    def stored(origin: str) -> set[str]:  # the values stored under customer_id
        with store.engine.connect() as db:
            rows = db.execute(select(spans.c.attributes, spans.c.events)
                              .where(spans.c.origin == origin)).all()
        found = [json.loads(r.attributes) for r in rows]
        found += [e["attributes"] for r in rows for e in json.loads(r.events)]
        return {str(a["customer_id"]) for a in found if "customer_id" in a}

    hotrod = "2ea75461946a7dd10f2c15ab36a076cb"  # getTrace-response.json: spans with customer_id
    otlp_span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "process orders",
                 "kind": 5, "startTimeUnixNano": "1", "endTimeUnixNano": "2",
                 "attributes": [{"key": "customer_id", "value": {"stringValue": "c-77"}},
                                {"key": "order.id", "value": {"stringValue": "o-1"}}]}
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [otlp_span]}]}]}).encode()
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{hotrod}"] = Reply(body=fixture("getTrace-response.json"))
        settings = CollectSettings.resolve(env={}, redact="customer", otlp_port=str(free_port()),
                                           jaeger=jaeger.url)
        collector = Collector(f"sqlite:///{tmp_path}/r.db", settings)
        store = collector.open_store()
        collector._start_receiver()
        collector._start_fetcher()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", collector.receiver.port, timeout=10)
            conn.request("POST", "/v1/traces", body=body,
                         headers={"Content-Type": "application/json"})
            assert conn.getresponse().status == 200
            conn.close()
            assert collector.receiver.flush()
            add_event(store, 0, hotrod, 1_000)
            assert collector.fetcher.run_once(now_ms=10_000) == 40
        finally:
            collector.receiver.stop()
    assert stored("otlp") == {"[REDACTED]"} and stored("jaeger") == {"[REDACTED]"}
    store.dispose()


def test_a_collector_records_its_intervals_for_the_readers(bootstrap, topic, tmp_path) -> None:
    """`collect` records its poll and analysis intervals in the store as it starts, so the
    CLI and the dashboard judge the age of its figures by them (query/intervals.py);
    `collect --once`, which renews nothing after it, leaves them as they were."""
    import threading

    from choreoscope.collector.query import intervals
    from choreoscope.collector.query.intervals import KEY, Intervals
    from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

    settings = CollectSettings.resolve(
        env={}, bootstrap=bootstrap, topics=f"^{topic}$", otlp_port="0",
        poll_interval="60", analyze_interval="7.5",
        kafka_option=[f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                      f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}"])
    url = f"sqlite:///{tmp_path}/i.db"
    once = Collector(url, settings)
    assert once.run_once() == 0
    assert once.opened.get_meta(KEY) is None
    once.opened.dispose()
    collector, stop = Collector(url, settings), threading.Event()
    running = threading.Thread(target=collector.run, args=(stop,))
    running.start()
    try:
        deadline = time.monotonic() + 60
        while (collector.store is None or collector.store.get_meta(KEY) is None) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        with collector.opened.engine.connect() as conn:
            assert intervals.recorded(conn) == Intervals(poll_s=60.0, analyze_s=7.5)
    finally:
        stop.set()
        running.join(60)
    assert not running.is_alive()
