"""analyze(): one reconstruction + detection pass over the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, func, select

from choreoscope.collector.analyze import AnalysisOptions, AnalysisResult, analyze
from choreoscope.collector.reconstruct import skip
from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import anomalies, events, flows, graph_edges, spans
from tests.collector.reconstruct.factory import (
    T0,
    clean_flow,
    clean_store,
    consumer,
    dead_outbox,
    ev,
    new_store,
    producer,
    put,
)

NOW = T0 + 120_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """An empty store on SQLite or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        s = new_store(tmp_path)
    else:
        s = Store(request.getfixturevalue("postgres_url")).create()
    yield s
    s.dispose()


def _scenario(store: Store) -> dict[str, str]:
    """Seven flows: three complete, one stuck, one failed handler, one dead outbox row, one
    in progress. Returns the failed span's anomaly key."""
    offsets: dict = {}
    for i in range(3):
        put(store, *clean_flow(i, offsets=offsets))
    put(store, *clean_flow(3, hops=2, offsets=offsets))
    rows, spans = clean_flow(4, offsets=offsets)
    bad = next(s for s in spans if s["message_id"] == "e0000004-2" and s["kind"] == "consumer")
    bad.update(status="error", error_type="KeyError", status_message="sku")
    put(store, rows, spans)
    put(store, *clean_flow(5, offsets=offsets), outbox=[dead_outbox("f0000005")])
    put(store, *clean_flow(6, hops=2, start=NOW - 10_000, offsets=offsets))
    return {"failed_key": f"failed_handler:{bad['trace_id']}/{bad['span_id']}"}


def _flows(store: Store) -> dict[str, dict]:
    with store.engine.connect() as conn:
        return {r.correlation_id: r._asdict() for r in conn.execute(select(flows))}


def _anomaly_keys(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(conn.execute(select(anomalies.c.key)).scalars())


def test_statuses_anomalies_and_graph(store):
    """Each flow gets its status, the stuck and failed flows their anomalies, the graph its edges."""
    keys = _scenario(store)
    result = analyze(store, AnalysisOptions(), now_ms=NOW)
    assert isinstance(result, AnalysisResult)
    assert (result.flows, result.statuses) == (7, {"completed": 3, "stuck": 1, "failed": 2,
                                                   "in_progress": 1})
    assert result.terminal_types == ["customer.notified"]
    assert _anomaly_keys(store) == sorted([keys["failed_key"], "stuck_flow:f0000003:e0000003-1"])
    rows = _flows(store)
    assert {k: (v["status"], v["anomaly_count"]) for k, v in rows.items()} == {
        "f0000000": ("completed", 0), "f0000001": ("completed", 0), "f0000002": ("completed", 0),
        "f0000003": ("stuck", 1), "f0000004": ("failed", 1), "f0000005": ("failed", 0),
        "f0000006": ("in_progress", 0)}
    f0 = rows["f0000000"]
    assert f0["variant"] == ("order.placed > payment.authorized > inventory.reserved > "
                             "shipment.scheduled > customer.notified")
    assert (f0["event_count"], f0["started_at_ms"], f0["last_seen_at_ms"], f0["duration_ms"]) == (
        5, T0 - 1, T0 + 24, 25)
    assert json.loads(f0["services"]) == ["crm", "inventory", "notifications", "orders",
                                          "payments", "shipping"]
    assert (f0["trace_status"], f0["updated_at_ms"]) == ("available", NOW)
    with store.engine.connect() as conn:
        edges = {(r.source, r.target, r.kind): (r.count, r.p50_ms, r.anomaly_count)
                 for r in conn.execute(select(graph_edges))}
    assert edges[("orders", "order.placed", "emits")] == (7, None, 0)
    assert edges[("payment.authorized", "inventory", "consumed_by")] == (7, 2.0, 0)
    assert edges[("inventory.reserved", "shipping", "consumed_by")] == (5, 2.0, 1)
    # payments reacts 3 ms after its processing of order.placed began
    assert edges[("payments", "payment.authorized", "emits")] == (7, 3.0, 1)
    assert len(edges) == 10


def test_rerunning_adds_nothing_and_rewrites_nothing(store):
    """A second full pass on the same data records no anomaly and rewrites no flow."""
    _scenario(store)
    first = analyze(store, AnalysisOptions(), now_ms=NOW)
    before = (_anomaly_keys(store), _flows(store))
    store.set_meta("analysis.state", "null")  # forget the last pass: no skipping
    second = analyze(store, AnalysisOptions(), now_ms=NOW)
    assert (first.anomalies_new, first.flows_written) == (2, 7)
    assert not second.skipped
    assert (second.anomalies_new, second.flows_written, second.flows_removed) == (0, 0, 0)
    assert second.anomalies_found == {"failed_handler": 1, "stuck_flow": 1}
    assert (_anomaly_keys(store), _flows(store)) == before


def test_a_failed_handler_learns_its_event_when_the_event_is_stored_later(store):
    """The span of a failed processing can be stored before the event it handled (the OTLP
    receiver is quicker than the bus): the anomaly recorded then gets the event's type and
    subject once the event is in, as the same row with its first detection time."""
    e = ev("e1", "payment.authorized", flow="f1", subject="ord_1", source="payments")
    bad = consumer(e, "shipping", start_ms=T0 + 5, status="error", error_type="RuntimeError")
    bad["status_message"] = "RuntimeError: no courier"
    e0 = ev("e0", "order.placed", flow="f1", subject="ord_1", offset=1)
    put(store, [e0], [bad, producer(e0)])
    analyze(store, AnalysisOptions(), now_ms=NOW)
    put(store, [e], [producer(e)])
    second = analyze(store, AnalysisOptions(), now_ms=NOW + 5_000)
    assert second.anomalies_new == 0
    with store.engine.connect() as conn:
        [row] = conn.execute(select(anomalies)).all()
    assert (row.kind, row.event_id, row.subject, row.detected_at_ms) == (
        "failed_handler", "e1", "ord_1", NOW)
    assert row.detail == ("shipping (group shipping) failed handling payment.authorized e1: "
                          "RuntimeError: no courier")
    assert json.loads(row.extra)["type"] == "payment.authorized"


def test_a_duplicate_counts_every_copy_seen_so_far(store):
    """A third copy of a published event updates the recorded duplicate, not a new row."""
    copies = [ev("e1", "order.placed", flow="f1", subject="ord_1", offset=i) for i in range(3)]
    put(store, copies[:2])
    analyze(store, AnalysisOptions(), now_ms=NOW)
    put(store, copies[2:])
    analyze(store, AnalysisOptions(), now_ms=NOW + 5_000)
    with store.engine.connect() as conn:
        [row] = conn.execute(select(anomalies)).all()
    assert (row.key, row.detail, row.detected_at_ms) == (
        "duplicate:publish:e1", "order.placed e1 was published 3 times", NOW)


def test_a_nul_quoted_by_a_problem_is_stored_as_a_replacement_character(store):
    """Ingest replaces NUL in an event's fields, but its problems quote the raw value: the
    anomaly's detail must not carry the NUL (PostgreSQL refuses it, failing every pass)."""
    put(store, [ev("e1", "b.happened\ufffd", flow="f1",
                   problems=["type_not_past_tense: b.happened\x00"])])
    result = analyze(store, AnalysisOptions(), now_ms=NOW)
    assert result.anomalies_new == 1
    with store.engine.connect() as conn:
        [detail] = conn.execute(select(anomalies.c.detail)).scalars()
    assert detail.endswith("type_not_past_tense: b.happened\ufffd") and "\x00" not in detail


def test_a_set_stop_ends_the_pass_before_it_writes_flows(store):
    """A collector stopping does not wait for a long pass: with `stop` set it ends at the next
    flow, writes no flow, and the next pass (nothing skipped) does the whole work."""
    import threading

    from choreoscope.collector.analyze import AnalysisInterrupted

    _scenario(store)
    stop = threading.Event()
    stop.set()
    with pytest.raises(AnalysisInterrupted):
        analyze(store, AnalysisOptions(), now_ms=NOW, stop=stop)
    assert _flows(store) == {}
    result = analyze(store, AnalysisOptions(), now_ms=NOW, stop=threading.Event())
    assert (result.skipped, result.flows_written) == (False, 7)


def test_unchanged_store_is_skipped_until_something_is_due(store):
    """Without new rows the next pass is skipped, until the in-progress flow's stuck-after;
    every pass, skipped or not, records when it ran (the flows stand as of then)."""
    _scenario(store)
    first = analyze(store, AnalysisOptions(), now_ms=NOW)
    activity = NOW - 10_000 + 5 + 2 + 2  # f0000006's last span ends 9,991 ms before NOW
    assert (first.skipped, first.next_due_ms) == (False, activity + 60_000)
    assert store.get_meta(skip.CHECKED_KEY) == str(NOW)
    again = analyze(store, AnalysisOptions(), now_ms=activity + 59_999)
    assert again.skipped
    assert store.get_meta(skip.CHECKED_KEY) == str(activity + 59_999)
    assert skip.last_pass(store.get_meta(skip.STATE_KEY))[0] == NOW
    assert (again.flows, again.statuses) == (first.flows, first.statuses)
    assert not analyze(store, AnalysisOptions(skew_s=2.0), now_ms=NOW).skipped  # other options
    due = analyze(store, AnalysisOptions(), now_ms=activity + 60_000)
    assert not due.skipped
    assert due.statuses["stuck"] == 2


def test_another_analysis_code_analyses_again(store, monkeypatch):
    """An upgraded collector recomputes the flows of an unchanged store instead of skipping."""
    from importlib import metadata

    _scenario(store)
    assert skip.ANALYSIS_CODE.startswith(metadata.version("choreoscope-collector") + ":")
    assert not analyze(store, AnalysisOptions(), now_ms=NOW).skipped
    assert analyze(store, AnalysisOptions(), now_ms=NOW).skipped
    monkeypatch.setattr(skip, "ANALYSIS_CODE", skip.ANALYSIS_CODE + "-changed")
    assert not analyze(store, AnalysisOptions(), now_ms=NOW).skipped
    assert analyze(store, AnalysisOptions(), now_ms=NOW).skipped


def test_the_analysis_code_digest_follows_the_detectors_not_the_rest(tmp_path, monkeypatch):
    """A release that changes a detector (same version number) changes the digest; a change
    outside reconstruct/, detect/ and analyze.py does not."""
    for name in ("reconstruct/skip.py", "reconstruct/flows.py", "detect/orphan.py",
                 "analyze.py", "ingest/batch.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(skip, "__file__", str(tmp_path / "reconstruct" / "skip.py"))
    first = skip._analysis_code()
    assert first == skip._analysis_code()
    (tmp_path / "ingest" / "batch.py").write_text("# changed\n")
    assert skip._analysis_code() == first
    digests = {first}
    for name in ("detect/orphan.py", "reconstruct/flows.py", "analyze.py"):
        (tmp_path / name).write_text("# changed\n")
        digests.add(skip._analysis_code())
    assert len(digests) == 4
    (tmp_path / "detect" / "new_detector.py").write_text("")
    assert skip._analysis_code() not in digests


def test_the_last_full_pass_is_remembered_with_its_duration(store):
    """The store says when flows were last analysed and how long it took; skipped passes
    leave that as it was (nothing changed since)."""
    assert skip.last_pass(store.get_meta(skip.STATE_KEY)) is None
    _scenario(store)
    first = analyze(store, AnalysisOptions(), now_ms=NOW)
    assert skip.last_pass(store.get_meta(skip.STATE_KEY)) == (NOW, round(first.elapsed_s, 3))
    assert 0 < first.elapsed_s < 60
    assert analyze(store, AnalysisOptions(), now_ms=NOW + 1).skipped
    assert skip.last_pass(store.get_meta(skip.STATE_KEY)) == (NOW, round(first.elapsed_s, 3))


@pytest.mark.parametrize("text", [None, "", "null", "[1]", "{not json", '{"now_ms": "soon"}'])
def test_no_last_pass_is_read_from_a_missing_or_odd_state(text):
    """Before any pass, or from a row another version wrote differently: None, not an error."""
    assert skip.last_pass(text) is None
    assert skip.last_pass('{"now_ms": 5}') == (5, None)


def test_new_rows_or_anomalies_end_the_skipping(store):
    """A new event, or an anomaly recorded by someone else, makes the next pass a full one."""
    from choreoscope.collector.detect.anomaly import Anomaly, record

    _scenario(store)
    analyze(store, AnalysisOptions(), now_ms=NOW)
    put(store, [ev("n1", "order.placed", flow="f9", offset=99)])
    after_event = analyze(store, AnalysisOptions(), now_ms=NOW)
    assert (after_event.skipped, after_event.flows) == (False, 8)
    assert analyze(store, AnalysisOptions(), now_ms=NOW).skipped
    with store.engine.begin() as conn:
        record(store, conn, [Anomaly(kind="stuck_outbox", key="x", detail="row x is stuck",
                                     correlation_id="f0000000")], NOW)
    after_anomaly = analyze(store, AnalysisOptions(), now_ms=NOW)
    assert not after_anomaly.skipped
    assert _flows(store)["f0000000"]["anomaly_count"] == 1


def test_time_passing_makes_a_waiting_flow_stuck(store):
    """The in-progress flow becomes stuck once stuck-after passed; only it is rewritten."""
    _scenario(store)
    analyze(store, AnalysisOptions(), now_ms=NOW)
    later = analyze(store, AnalysisOptions(), now_ms=NOW + 60_000)
    assert later.flows_written == 1
    assert _flows(store)["f0000006"]["status"] == "stuck"
    assert "stuck_flow:f0000006:e0000006-1" in _anomaly_keys(store)


def test_per_type_stuck_after_and_removed_flows(store):
    """A long stuck-after for a type keeps a flow in progress; a pruned flow disappears."""
    _scenario(store)
    opts = AnalysisOptions(stuck_after_by_type={"payment.authorized": 3600.0})
    result = analyze(store, opts, now_ms=NOW)
    assert result.statuses["in_progress"] == 2
    with store.engine.begin() as conn:
        conn.execute(delete(events).where(events.c.flow_id == "f0000000"))
    result = analyze(store, opts, now_ms=NOW)
    assert (result.flows, result.flows_removed) == (6, 1)
    assert "f0000000" not in _flows(store)


def test_spans_find_their_events_and_flows_by_ids_over_the_columns(store):
    """Ids over their column are cut with a hash (ingest/rows.py); a span naming the same
    ids (message id, conversation id, service) is cut the same way, so the consumer's span
    joins the flow, and the graph knows who consumed what."""
    from choreoscope.collector.ingest.redact import Redactor
    from choreoscope.collector.ingest.rows import event_row
    from choreoscope.collector.traces.model import Span
    from choreoscope.instrumentation.decoder import decode_record

    cid, eid, shop = "c" * 205, "e" * 205, "s" * 300
    trace, producer = "ab" * 16, "cd" * 8
    headers = [("ce_specversion", b"1.0"), ("ce_id", eid.encode()),
               ("ce_type", b"order.placed"), ("ce_source", shop.encode()),
               ("ce_time", b"2026-01-02T03:04:05.678Z"), ("ce_schemaversion", b"1"),
               ("ce_correlationid", cid.encode()),
               ("traceparent", f"00-{trace}-{producer}-01".encode())]
    event = decode_record(headers, b"{}", topic="orders", partition=0, offset=0,
                          timestamp_ms=T0)
    row = event_row(event, redactor=Redactor(), observed_at_ms=T0 + 1, headers=headers)
    span = Span(trace_id=trace, span_id="ef" * 8, name="process orders", kind="consumer",
                parent_span_id=producer, service="billing", start_us=(T0 + 40) * 1000,
                duration_us=1000, status="ok",
                attributes={"messaging.message.id": eid,
                            "messaging.message.conversation_id": cid,
                            "messaging.consumer.group.name": "billing"})
    own = Span(trace_id=trace, span_id=producer, name="send orders", kind="producer",
               service=shop, start_us=T0 * 1000, duration_us=1000, status="ok",
               attributes={"messaging.message.id": eid})
    with store.engine.begin() as conn:
        store.insert_ignore(conn, events, [row])
        store.insert_ignore(conn, spans, [s.row(origin="otlp", received_at_ms=T0 + 50)
                                          for s in (span, own)])
    analyze(store, AnalysisOptions(), now_ms=T0 + 10**6)
    flow = _flows(store)[row["flow_id"]]
    assert (json.loads(flow["services"]), flow["event_count"]) == (
        sorted(["billing", row["source"]]), 1)
    with store.engine.connect() as conn:
        edges = {(r.source, r.target, r.kind) for r in conn.execute(select(graph_edges))}
    assert ("order.placed", "billing", "consumed_by") in edges


def test_bus_order_across_topics_is_judged_with_the_collectors_skew(store):
    """An effect stamped 400 ms before its cause on another topic (its producer's clock
    behind) is within `--skew` (default 1 s); with a skew of 0.1 s it reached the bus first."""
    put(store, [ev("e1", "order.placed", flow="f1", topic="orders", ts=T0 + 1000),
                ev("e2", "payment.authorized", flow="f1", topic="payments", cause="e1",
                   ts=T0 + 600)])
    analyze(store, AnalysisOptions(), now_ms=T0 + 10**6)
    assert [k for k in _anomaly_keys(store) if k.startswith("out_of_order")] == []
    analyze(store, AnalysisOptions(skew_s=0.1), now_ms=T0 + 10**6 + 1)
    assert [k for k in _anomaly_keys(store) if k.startswith("out_of_order")] == [
        "out_of_order:causal:bus:e1:e2"]


def test_late_cause_and_envelope_problems(store):
    """An effect ahead of its cause on the bus, a missing cause and a bad envelope are found."""
    put(store, [ev("e1", "order.placed", flow="f1", offset=1, subject="ord_1", traced=False),
                ev("e2", "order.amended", flow="f1", offset=0, subject="ord_1", cause="e1",
                   traced=False),
                ev("e3", "order.cancelled", flow="f1", offset=2, cause="zz", traced=False,
                   problems=["missing_schema_version"])])
    result = analyze(store, AnalysisOptions(), now_ms=T0 + 10**6)
    assert result.anomalies_found == {"out_of_order": 1, "orphan": 1, "envelope": 1,
                                      "untraced": 3}
    assert _anomaly_keys(store) == [
        "envelope:orders/0/2:missing_schema_version", "orphan:e3",
        "out_of_order:causal:bus:e1:e2", "untraced:no_trace_context:e1",
        "untraced:no_trace_context:e2", "untraced:no_trace_context:e3"]
    assert _flows(store)["f1"]["anomaly_count"] == 6


def test_clean_run_of_1000_flows(tmp_path):
    """1,000 clean five-hop flows: all completed, no anomaly at all."""
    store = clean_store(tmp_path)
    result = analyze(store, AnalysisOptions(jaeger_enabled=False), now_ms=T0 + 10**9)
    assert (result.flows, result.statuses, result.anomalies_found) == (
        1000, {"completed": 1000}, {})
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(anomalies)).scalar_one() == 0


def test_empty_store(tmp_path):
    """An empty store gives an empty result."""
    result = analyze(new_store(tmp_path), now_ms=T0)
    assert (result.flows, result.edges, result.anomalies_new) == (0, 0, 0)


@pytest.mark.parametrize("field,value", [("stuck_after_s", -1), ("skew_s", "1"),
                                         ("stuck_after_by_type", {"a.b": -2})])
def test_bad_options_are_rejected(field, value):
    """Negative or non-numeric thresholds raise ValueError naming what was expected."""
    with pytest.raises(ValueError, match="expected"):
        AnalysisOptions(**{field: value})


def test_odd_rows_never_crash_and_long_keys_fit(store):
    """Events without type, source or times and a 255-character group still give flows and
    anomalies whose keys fit their column."""
    from tests.collector.reconstruct.factory import consumer

    group, id1, id2 = "g" * 255, "1" * 128, "2" * 128
    e1 = ev(id1, None, flow="f1", source=None, subject="s" * 255, traced=False)
    e1.update(time_ms=None, broker_ts_ms=None, time=None, problems="not a json list")
    e2 = ev(id2, "x.happened", flow="f1", offset=1, cause=id1, subject="s" * 255, ts=T0 - 5)
    put(store, [e1, e2], [consumer(e2, group, start_ms=T0 + 1), consumer(e1, group, start_ms=T0 + 2),
                          producer(e2)])
    result = analyze(store, AnalysisOptions(), now_ms=T0 + 10**6)
    assert result.flows == 1
    assert result.anomalies_found == {"envelope": 1, "out_of_order": 1, "untraced": 1}
    keys = _anomaly_keys(store)
    assert all(len(k) <= 512 for k in keys)
    [long_key] = [k for k in keys if k.startswith("out_of_order:causal:ggg")]
    assert len(long_key) == len("out_of_order:") + 400
    assert _flows(store)["f1"]["variant"] == "? > x.happened"
    assert analyze(store, AnalysisOptions(), now_ms=T0 + 10**6).anomalies_new == 0


def test_an_anomaly_is_detected_when_recorded_never_before_the_pass(store):
    """A running collector's pass reads spans that arrive while it runs: an anomaly's
    detection time is when it is recorded, so it is never older than its evidence; a clock
    behind the pass's start does not move it earlier. A pass at a given time uses that."""
    from choreoscope.collector.analyze import _Sink
    from choreoscope.collector.detect.anomaly import Anomaly
    from choreoscope.collector.query import list_anomalies

    def found(key: str) -> list[Anomaly]:
        return [Anomaly(kind="orphan", key=key, subkind="causation", detail=key)]

    for key, clock in (("late", lambda: NOW + 5_000), ("behind", lambda: NOW - 10),
                       ("fixed", None)):
        sink = _Sink(store, NOW, clock)
        sink.add(found(key))
        sink.flush()
    assert {a["detail"]: a["detected_at"] for a in list_anomalies(store)} == {
        "late": "2023-11-14T22:15:25.000Z", "behind": "2023-11-14T22:15:20.000Z",
        "fixed": "2023-11-14T22:15:20.000Z"}


def test_a_flow_of_dead_outbox_rows_lasts_as_long_as_its_spans(store):
    """A flow known only from dead outbox rows has the spans of its request and of the failed
    publish attempts: its time runs from the first to the last of them and its trace is
    available (it showed 0 ms and "trace unavailable" above eight seconds of spans). A dead
    row whose trace has no span stored keeps the row's time."""
    traced, bare = "ab" * 16, "cd" * 16

    def row(rid: str, flow: str, trace: str, created_ms: int) -> dict:
        return {"id": rid, "type": "order.placed", "attempts": 5, "status": "dead",
                "correlation_id": flow, "trace_id": trace,
                "created_at": _iso(created_ms), "age_s": 60.0}

    source = dead_outbox("unused")
    source["stuck"] = json.dumps([row("r1", "gone-1", traced, T0),
                                  row("r2", "gone-2", bare, T0 + 7)])
    source["dead"] = 2

    def span(span_id: str, start_ms: int, duration_ms: int, name: str) -> dict:
        e = ev(None, None, flow="gone-1")
        s = producer(e)
        s.update(trace_id=traced, span_id=span_id, name=name, start_us=start_ms * 1000,
                 duration_us=duration_ms * 1000, message_id=None, status="error")
        return s

    put(store, span_rows=[span("0000000000000001", T0 - 40, 60, "POST /orders"),
                          span("0000000000000002", T0 + 1000, 5, "send orders"),
                          span("0000000000000003", T0 + 8000, 30, "send orders")],
        outbox=[source])
    analyze(store, AnalysisOptions(), now_ms=NOW)
    rows = _flows(store)
    assert {k: (v["status"], v["started_at_ms"], v["last_seen_at_ms"], v["duration_ms"],
                v["trace_status"], v["event_count"]) for k, v in rows.items()} == {
        "gone-1": ("failed", T0 - 40, T0 + 8030, 8070, "available", 0),
        "gone-2": ("failed", T0 + 7, T0 + 7, 0, "unavailable", 0)}


def _iso(ms: int) -> str:
    from choreoscope.collector.query._convert import rfc3339_ms

    return rfc3339_ms(ms)
