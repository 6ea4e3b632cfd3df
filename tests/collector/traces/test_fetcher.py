"""TraceFetcher: discovery from stored events, scheduling, backoff and search, on a local Jaeger."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import events, spans, trace_fetches
from choreoscope.collector.traces.fetcher import NEVER_MS, TraceFetcher, trace_availability
from tests.collector.traces.jaeger_server import NOT_FOUND_V3, FakeJaeger, Reply, fixture

T_SMALL = "00000000000000000000000000000001"  # GetTrace.json: 1 span
T_HOTROD = "2ea75461946a7dd10f2c15ab36a076cb"  # getTrace-response.json: 40 spans
T_OTHER = "0af7651916cd43dd8448eb211c80319c"  # not in Jaeger
T0 = 1_700_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path}/fetch.db").create()


def add_event(store: Store, offset: int, trace_id: str | None, observed_at_ms: int,
              sampled: bool | None = True) -> None:
    with store.engine.begin() as conn:
        conn.execute(events.insert().values(
            topic="orders", partition=0, offset=offset, event_id=f"e{offset}",
            flow_id=trace_id or f"e{offset}", trace_id=trace_id, observed_at_ms=observed_at_ms,
            envelope="binary", data_truncated=False,
            trace_sampled=sampled if trace_id else None))


def fetch_rows(store: Store) -> dict[str, dict]:
    with store.engine.connect() as conn:
        return {r.trace_id: dict(r._mapping) for r in conn.execute(select(trace_fetches))}


def span_count(store: Store, trace_id: str) -> int:
    with store.engine.connect() as conn:
        return len(conn.execute(select(spans.c.span_id)
                                .where(spans.c.trace_id == trace_id)).all())


def fetcher(store: Store, url: str, **kw: object) -> TraceFetcher:
    options: dict = {"settle_s": 5, "refetch_while_active_s": 60, "refetch_interval_s": 10,
                     "search_services": False, "backoff_s": 5, "max_attempts": 3,
                     "timeout_s": 2}
    options.update(kw)
    return TraceFetcher(store, url, **options)


def test_discovery_waits_for_the_settle_delay(store: Store) -> None:
    """New trace ids become pending rows due settle_s after they were first seen."""
    add_event(store, 0, T_SMALL, T0)
    add_event(store, 1, T_SMALL, T0 + 3000)
    add_event(store, 2, T_HOTROD, T0 + 2000)
    add_event(store, 3, None, T0)
    with FakeJaeger() as jaeger:
        assert fetcher(store, jaeger.url).run_once(now_ms=T0 + 4000) == 0
        assert jaeger.requests == []
    rows = fetch_rows(store)
    assert {t: (r["status"], r["first_seen_ms"], r["last_event_ms"], r["next_fetch_ms"],
                r["attempts"]) for t, r in rows.items()} == {
        T_SMALL: ("pending", T0, T0 + 3000, T0 + 5000, 0),
        T_HOTROD: ("pending", T0 + 2000, T0 + 2000, T0 + 7000, 0),
    }


def test_traces_their_producers_did_not_sample_are_never_fetched(store: Store) -> None:
    """A trace id whose events all say "not sampled" is recorded nowhere: no fetch is
    scheduled. One sampled event of it (or a row stored before the flag was kept) is enough."""
    add_event(store, 0, T_SMALL, T0, sampled=False)
    add_event(store, 1, T_HOTROD, T0, sampled=False)
    add_event(store, 2, T_HOTROD, T0 + 1000, sampled=True)
    add_event(store, 3, T_OTHER, T0, sampled=None)
    with FakeJaeger() as jaeger:
        fetcher(store, jaeger.url).run_once(now_ms=T0 + 2000)
    assert sorted(fetch_rows(store)) == sorted([T_HOTROD, T_OTHER])


def test_due_traces_are_fetched_stored_and_refetched_while_active(store: Store) -> None:
    """A due trace is stored from api/v3, re-fetched while active, then left alone."""
    add_event(store, 0, T_SMALL, T0)
    add_event(store, 1, T_HOTROD, T0)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_SMALL}"] = Reply(body=fixture("GetTrace.json"))
        jaeger.routes[f"/api/v3/traces/{T_HOTROD}"] = Reply(body=fixture("getTrace-response.json"))
        f = fetcher(store, jaeger.url)
        assert f.run_once(now_ms=T0 + 5000) == 41
        rows = fetch_rows(store)
        assert {t: (r["status"], r["span_count"], r["last_fetch_ms"], r["next_fetch_ms"])
                for t, r in rows.items()} == {
            T_SMALL: ("found", 1, T0 + 5000, T0 + 15_000),
            T_HOTROD: ("found", 40, T0 + 5000, T0 + 15_000),
        }
        assert f.run_once(now_ms=T0 + 14_999) == 0 and len(jaeger.requests) == 2
        assert f.run_once(now_ms=T0 + 15_000) == 0  # same spans again: nothing new
        assert fetch_rows(store)[T_SMALL]["next_fetch_ms"] == T0 + 25_000
        assert f.run_once(now_ms=T0 + 65_000) == 0  # flow quiet for 60 s: last fetch
        assert fetch_rows(store)[T_SMALL]["next_fetch_ms"] == NEVER_MS
        assert len(jaeger.requests) == 6
    assert span_count(store, T_HOTROD) == 40


def test_span_attributes_matching_the_pattern_are_redacted(store: Store) -> None:
    """Jaeger's spans are stored with the values of attributes (of spans and of their events)
    whose key the redaction pattern matches replaced, every other attribute as fetched."""
    from choreoscope.collector.ingest.redact import Redactor

    add_event(store, 0, T_HOTROD, T0)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_HOTROD}"] = Reply(body=fixture("getTrace-response.json"))
        assert fetcher(store, jaeger.url, redactor=Redactor("customer|^driver$")).run_once(
            now_ms=T0 + 5000) == 40
    with store.engine.connect() as conn:
        rows = conn.execute(select(spans.c.attributes, spans.c.events)).all()
    attributes = [json.loads(r.attributes) for r in rows]
    events = [ev["attributes"] for r in rows for ev in json.loads(r.events)]
    seen: dict[str, set[str]] = {}
    for a in attributes + events:
        for key in ("customer_id", "driver", "driver_id"):
            if key in a:
                seen.setdefault(key, set()).add(str(a[key]))
    assert seen["customer_id"] == {"[REDACTED]"} and seen["driver"] == {"[REDACTED]"}
    assert "[REDACTED]" not in seen["driver_id"] and len(seen["driver_id"]) > 1


def test_catch_up_fetches_every_trace_at_once_for_a_last_pass(store: Store) -> None:
    """`collect --once` has no later pass: catch_up fetches the traces first seen just now
    (not due before the settle delay) and beyond one batch; a trace Jaeger lacks is missing,
    asked for once."""
    add_event(store, 0, T_SMALL, T0)
    add_event(store, 1, T_HOTROD, T0)
    add_event(store, 2, T_OTHER, T0)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_SMALL}"] = Reply(body=fixture("GetTrace.json"))
        jaeger.routes[f"/api/v3/traces/{T_HOTROD}"] = Reply(body=fixture("getTrace-response.json"))
        jaeger.routes[f"/api/v3/traces/{T_OTHER}"] = Reply(404, NOT_FOUND_V3)
        f = fetcher(store, jaeger.url, batch_size=1)
        assert f.run_once(now_ms=T0) == 0 and jaeger.requests == []  # settle delay: not yet
        assert f.catch_up(now_ms=T0) == 41
        assert sorted(jaeger.requests) == sorted(f"/api/v3/traces/{t}"
                                                 for t in (T_SMALL, T_HOTROD, T_OTHER))
    assert {t: r["status"] for t, r in fetch_rows(store).items()} == {
        T_SMALL: "found", T_HOTROD: "found", T_OTHER: "missing"}


def test_new_events_schedule_a_refetch(store: Store) -> None:
    """An event for a finished trace schedules another fetch settle_s after it."""
    add_event(store, 0, T_SMALL, T0)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_SMALL}"] = Reply(body=fixture("GetTrace.json"))
        f = fetcher(store, jaeger.url, refetch_while_active_s=0)
        assert f.run_once(now_ms=T0 + 5000) == 1
        assert fetch_rows(store)[T_SMALL]["next_fetch_ms"] == NEVER_MS
        add_event(store, 1, T_SMALL, T0 + 90_000)
        f.run_once(now_ms=T0 + 91_000)
        row = fetch_rows(store)[T_SMALL]
        assert (row["status"], row["last_event_ms"], row["next_fetch_ms"]) == (
            "found", T0 + 90_000, T0 + 95_000)


def test_missing_traces_back_off_then_stop(store: Store) -> None:
    """Jaeger's 404 marks a trace missing, retried with backoff up to max_attempts."""
    add_event(store, 0, T_OTHER, T0)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_OTHER}"] = Reply(404, NOT_FOUND_V3, "text/plain")
        f = fetcher(store, jaeger.url)
        f.run_once(now_ms=T0 + 5000)
        row = fetch_rows(store)[T_OTHER]
        assert (row["status"], row["attempts"], row["next_fetch_ms"]) == ("missing", 1, T0 + 10_000)
        assert trace_availability(row) == "pending"
        f.run_once(now_ms=T0 + 10_000)
        assert fetch_rows(store)[T_OTHER]["next_fetch_ms"] == T0 + 20_000
        f.run_once(now_ms=T0 + 20_000)
        row = fetch_rows(store)[T_OTHER]
        assert (row["status"], row["attempts"], row["next_fetch_ms"]) == ("missing", 3, NEVER_MS)
        assert trace_availability(row) == "unavailable"
        add_event(store, 1, T_OTHER, T0 + 30_000)
        f.run_once(now_ms=T0 + 31_000)
        row = fetch_rows(store)[T_OTHER]
        assert (row["attempts"], row["next_fetch_ms"]) == (0, T0 + 35_000)


def test_jaeger_down_marks_every_due_trace_and_does_not_raise(store: Store) -> None:
    """Connection refused: the pass stops, every due row records the error and backs off."""
    for i, tid in enumerate((T_SMALL, T_HOTROD, T_OTHER)):
        add_event(store, i, tid, T0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    f = fetcher(store, f"http://127.0.0.1:{port}")
    assert f.run_once(now_ms=T0 + 5000) == 0
    rows = fetch_rows(store).values()
    assert [(r["status"], r["attempts"], r["next_fetch_ms"]) for r in rows] == [
        ("error", 1, T0 + 10_000)] * 3
    assert all("unreachable" in r["last_error"] for r in rows)
    f.run_once(now_ms=T0 + 10_000)
    assert [(r["attempts"], r["next_fetch_ms"]) for r in fetch_rows(store).values()] == [
        (2, T0 + 20_000)] * 3


def test_slow_jaeger_costs_one_timeout_per_pass(store: Store) -> None:
    """A Jaeger slower than timeout_s is asked once per pass; the other due traces wait."""
    for i, tid in enumerate((T_SMALL, T_HOTROD, T_OTHER)):
        add_event(store, i, tid, T0)
    with FakeJaeger() as jaeger:
        for tid in (T_SMALL, T_HOTROD, T_OTHER):
            jaeger.routes[f"/api/v3/traces/{tid}"] = Reply(body=fixture("GetTrace.json"),
                                                           delay_s=1.0)
        f = fetcher(store, jaeger.url, timeout_s=0.2)
        assert f.run_once(now_ms=T0 + 5000) == 0
        assert len(jaeger.requests) == 1
    rows = list(fetch_rows(store).values())
    assert [r["status"] for r in rows] == ["error"] * 3
    assert "timed out after 0.2s" in rows[0]["last_error"]


def test_server_error_affects_only_its_trace(store: Store) -> None:
    """A 500 for one trace records its message; the other due traces are still fetched."""
    add_event(store, 0, T_OTHER, T0)
    add_event(store, 1, T_SMALL, T0 + 1)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_OTHER}"] = Reply(
            500, b'{"error":{"httpCode":500,"message":"storage unavailable"}}\n', "text/plain")
        jaeger.routes[f"/api/v3/traces/{T_SMALL}"] = Reply(body=fixture("GetTrace.json"))
        assert fetcher(store, jaeger.url).run_once(now_ms=T0 + 6000) == 1
    rows = fetch_rows(store)
    assert rows[T_OTHER]["status"] == "error"
    assert rows[T_OTHER]["last_error"].endswith("HTTP 500: storage unavailable")
    assert rows[T_SMALL]["status"] == "found"


def test_a_failing_storage_ends_the_pass_after_three_server_errors(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Jaeger answering 500 for every trace (its storage down) is asked three times a pass,
    not once per due trace, and logged once: the other traces back off with them."""
    traces = [f"{i + 1:032x}" for i in range(10)]
    for i, tid in enumerate(traces):
        add_event(store, i, tid, T0 + i)
    with FakeJaeger() as jaeger:
        for tid in traces:
            jaeger.routes[f"/api/v3/traces/{tid}"] = Reply(
                500, b'{"error":{"httpCode":500,"message":"storage unavailable"}}\n',
                "text/plain")
        with caplog.at_level(logging.WARNING, logger="choreoscope.collector.traces.fetcher"):
            assert fetcher(store, jaeger.url).run_once(now_ms=T0 + 6000) == 0
        assert len(jaeger.requests) == 3
    rows = fetch_rows(store)
    assert [(rows[t]["status"], rows[t]["attempts"]) for t in traces] == [("error", 1)] * 10
    assert all(rows[t]["last_error"].endswith("HTTP 500: storage unavailable") for t in traces)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # the two single failures, then the pass's end
    assert warnings[0].startswith("Jaeger fetch failed (8 traces wait)")
    assert warnings[1].startswith("Jaeger fetch failed for 2 traces this pass")


def test_legacy_jaeger_through_the_fetcher(store: Store) -> None:
    """Without api/v3, traces come from /api/traces/{id} (16-hex legacy ids joined)."""
    add_event(store, 0, T_SMALL, T0)
    body = b'{"data":[' + fixture("ui_01.json") + b'],"errors":null}'
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/traces/{T_SMALL}"] = Reply(body=body)
        assert fetcher(store, jaeger.url).run_once(now_ms=T0 + 5000) == 4
    assert fetch_rows(store)[T_SMALL]["span_count"] == 4


def test_search_per_service_stores_known_and_messaging_traces(store: Store) -> None:
    """The service search stores traces seen on the bus or with messaging spans, not the rest."""
    known = "00000000000000010000000000000000"
    add_event(store, 0, known, T0)
    found = json.loads(fixture("otel_traces_01.json"))
    consumer = found["resourceSpans"][0]["scopeSpans"][1]["spans"][1]
    consumer["attributes"].append({"key": "messaging.system", "value": {"stringValue": "kafka"}})
    other = json.loads(fixture("otlp2jaeger-in.json"))
    found["resourceSpans"] += other["resourceSpans"]
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(body=b'{"services":["jaeger","foo"]}')
        jaeger.routes["/api/v3/traces"] = Reply(body=json.dumps({"result": found}).encode())
        f = fetcher(store, jaeger.url, search_services=True, settle_s=60,
                    search_interval_s=30, search_lookback_s=300)
        assert f.run_once(now_ms=T0 + 1000) == 4
        assert [r.split("?")[0] for r in jaeger.requests] == ["/api/v3/services", "/api/v3/traces"]
        assert "query.service_name=foo" in jaeger.requests[1]
        assert f.run_once(now_ms=T0 + 2000) == 0 and len(jaeger.requests) == 2
    assert span_count(store, known) == 2
    assert span_count(store, "00000000000000020000000000000000") == 2
    assert span_count(store, "83a9efd15c1c98a977e0711cc93ee28b") == 0
    row = fetch_rows(store)[known]
    assert (row["status"], row["span_count"]) == ("found", 2)


def test_search_failure_is_recorded_not_raised(store: Store) -> None:
    """A failing search is logged and kept as last_error; the pass still returns."""
    with FakeJaeger() as jaeger:
        jaeger.routes["/api/v3/services"] = Reply(500, b"boom\n", "text/plain")
        f = fetcher(store, jaeger.url, search_services=True)
        assert f.run_once(now_ms=T0) == 0
    assert f.last_error is not None and f.last_error.endswith("HTTP 500: boom")


def test_background_thread_fetches_without_blocking(store: Store) -> None:
    """start() runs passes in a daemon thread until stop()."""
    add_event(store, 0, T_SMALL, int(time.time() * 1000) - 10_000)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_SMALL}"] = Reply(body=fixture("GetTrace.json"))
        f = fetcher(store, jaeger.url).start(interval_s=0.05)
        try:
            deadline = time.monotonic() + 20
            while span_count(store, T_SMALL) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            f.stop()
    assert fetch_rows(store)[T_SMALL]["status"] == "found"


def test_trace_availability_of_each_state() -> None:
    """The flow's trace status derives from the trace_fetches row."""
    def row(status: str, attempts: int = 0, next_ms: int = 0) -> dict:
        return {"status": status, "attempts": attempts, "next_fetch_ms": next_ms}

    assert trace_availability(None) == "none"
    assert trace_availability(row("pending")) == "pending"
    assert trace_availability(row("found")) == "available"
    assert trace_availability(row("missing", 1, 5)) == "pending"
    assert trace_availability(row("missing", 8, NEVER_MS)) == "unavailable"
    assert trace_availability(row("error", 2), max_attempts=3) == "pending"
    assert trace_availability(row("error", 3), max_attempts=3) == "unavailable"


def test_bad_settings_are_rejected(store: Store) -> None:
    """Negative delays and zero attempts fail at construction with what was expected."""
    with pytest.raises(ValueError, match="expected settle_s >= 0, got -1"):
        TraceFetcher(store, "http://localhost:16686", settle_s=-1)
    with pytest.raises(ValueError, match="expected a Jaeger URL"):
        TraceFetcher(store, "16686")


@pytest.mark.postgres
def test_fetch_cycle_on_postgres(postgres_url: str) -> None:
    """Discovery, fetch and the trace_fetches bookkeeping work on PostgreSQL too."""
    pg = Store(postgres_url).create()
    try:
        add_event(pg, 0, T_HOTROD, T0)
        add_event(pg, 1, T_OTHER, T0)
        with FakeJaeger() as jaeger:
            jaeger.routes[f"/api/v3/traces/{T_HOTROD}"] = Reply(
                body=fixture("getTrace-response.json"))
            jaeger.routes[f"/api/v3/traces/{T_OTHER}"] = Reply(404, NOT_FOUND_V3, "text/plain")
            assert fetcher(pg, jaeger.url).run_once(now_ms=T0 + 5000) == 40
        rows = fetch_rows(pg)
        assert (rows[T_HOTROD]["status"], rows[T_OTHER]["status"]) == ("found", "missing")
    finally:
        pg.dispose()


def test_invalid_trace_id_is_given_up_not_retried(store: Store) -> None:
    """A stored trace id that is not 32 hex digits is marked missing once and never blocks others."""
    add_event(store, 0, "zz-not-a-trace", T0)
    add_event(store, 1, T_SMALL, T0 + 1)
    with FakeJaeger() as jaeger:
        jaeger.routes[f"/api/v3/traces/{T_SMALL}"] = Reply(body=fixture("GetTrace.json"))
        assert fetcher(store, jaeger.url).run_once(now_ms=T0 + 6000) == 1
        assert jaeger.requests == [f"/api/v3/traces/{T_SMALL}"]
    row = fetch_rows(store)["zz-not-a-trace"]
    assert (row["status"], row["next_fetch_ms"], row["last_error"]) == (
        "missing", NEVER_MS, "expected a 32-hex-digit trace id, got 'zz-not-a-trace'")
