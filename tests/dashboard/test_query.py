"""The dashboard's aggregate queries and read-only store, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

from choreoscope.collector.query import dashboard as q
from tests.dashboard.store_rows import SECRET_URL, T0, fill


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('q') / 'store.db'}"
    fill(url).dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, sqlite_url: str) -> q.Store:
    if request.param == "sqlite":
        return q.open_readonly(sqlite_url)
    url = request.getfixturevalue("postgres_url")
    fill(url).dispose()
    return q.open_readonly(url)


def test_mask_url_hides_the_password() -> None:
    """A URL's password becomes `***`; a URL without one is unchanged."""
    assert q.mask_url(SECRET_URL) == "postgresql://billing:***@db.internal/billing"
    assert q.mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_mask_secrets_in_free_text() -> None:
    """Credentials inside an error message are masked, the rest kept."""
    assert q.mask_secrets(f"connection to {SECRET_URL} refused; retry mysql://a:b@h/x") == (
        "connection to postgresql://billing:***@db.internal/billing refused; "
        "retry mysql://a:***@h/x")
    assert q.mask_secrets(None) is None


def test_readonly_sqlite_refuses_writes(sqlite_url: str) -> None:
    """The dashboard's SQLite connection cannot write."""
    store = q.open_readonly(sqlite_url)
    with pytest.raises(sqlalchemy.exc.OperationalError, match=r"readonly|read-only|query_only"), \
            store.engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM flows"))
    store.dispose()


def test_readonly_sqlite_never_creates_a_file(tmp_path: Path) -> None:
    """Opening a missing SQLite store fails clearly and creates nothing."""
    with pytest.raises(FileNotFoundError, match="expected a store database at"):
        q.open_readonly(f"sqlite:///{tmp_path / 'no.db'}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_readonly_postgres_refuses_writes(postgres_url: str) -> None:
    """The dashboard's PostgreSQL sessions are read-only transactions."""
    fill(postgres_url).dispose()
    store = q.open_readonly(postgres_url)
    with pytest.raises(sqlalchemy.exc.InternalError, match="read-only transaction"), \
            store.engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM flows"))
    store.dispose()


def test_overview_counts_each_duplicated_event_once(tmp_path: Path) -> None:
    """An event published twice and delivered twice to a group is two duplicate anomalies,
    and one duplicated event."""
    from choreoscope.collector.store import schema
    from tests.dashboard.store_rows import add

    url = f"sqlite:///{tmp_path / 'd.db'}"
    add(fill(url), {schema.anomalies: [{
        "key": "duplicate:delivery:payments:e1-paid", "kind": "duplicate",
        "subkind": "delivery", "correlation_id": "ord-1", "event_id": "e1-paid",
        "subject": "ord_1", "service": "shipping-service", "group_name": "shipping",
        "detail": "delivered twice", "extra": None, "detected_at_ms": T0 + 600_000}]}).dispose()
    o = q.overview(q.open_readonly(url), now_ms=T0 + 5 * 60_000)
    assert (o["anomalies_by_kind"]["duplicate"], o["duplicated_events"]) == (2, 1)


def test_overview_counts(store: q.Store) -> None:
    """Totals, trace share, anomaly kinds, outbox sums and per-minute counts."""
    o = q.overview(store, now_ms=T0 + 5 * 60_000, window_ms=5 * 60_000)
    assert (o["events_total"], o["events_traced"]) == (9, 7)
    assert o["anomalies_by_kind"] == {"duplicate": 1, "out_of_order": 1, "stuck_flow": 1}
    assert o["duplicated_events"] == 1
    assert (o["outbox_pending"], o["outbox_dead"], o["outbox_unreachable"],
            o["outbox_never_measured"]) == (9, 1, 1, 0)
    assert o["outbox_oldest_pending_age_s"] == 754.0
    assert (o["consumer_lag"], o["consumer_groups"]) == (4, 1)
    # figures as of the oldest source's last good poll, lag as of its last measurement
    assert (o["outbox_as_of_ms"], o["lag_measured_at_ms"]) == (T0 + 300_000, T0 + 600_000)
    assert [m["count"] for m in o["events_per_minute"]] == [0, 4, 2, 1, 0, 0]
    assert o["events_per_minute"][1]["minute_ms"] == T0 + 60_000
    assert (o["analysed_at_ms"], o["analysis_s"]) == (None, None)  # filled without analysis


def test_overview_says_when_flows_were_analysed(tmp_path: Path) -> None:
    """The last full pass's time and duration, from the collector's analysis state."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    writable = fill(url)
    writable.set_meta("analysis.state", '{"now_ms": 1795000000123, "elapsed_s": 2.5}')
    writable.dispose()
    o = q.overview(q.open_readonly(url), now_ms=T0)
    assert (o["analysed_at_ms"], o["analysis_s"]) == (1_795_000_000_123, 2.5)


def test_variants_with_nearest_rank_percentiles(store: q.Store) -> None:
    """Each variant's count, share and duration percentiles, most common first."""
    v = q.variants(store)
    assert (v["total_flows"], v["flows_without_events"]) == (5, 0)
    assert [(r["variant"], r["count"], r["p50_ms"], r["p95_ms"]) for r in v["variants"]] == [
        ("PriceUpdate", 2, 0, 0),
        ("order.placed", 1, 60, 60),
        ("order.placed > payment.completed", 1, 60, 60),
        ("order.placed > payment.completed > order.shipped", 1, 200, 200),
    ]
    assert v["variants"][0]["share"] == pytest.approx(0.4)


def test_event_health_groups_problems(store: q.Store) -> None:
    """Problem codes per producer and type, versions per type, untraced per producer."""
    h = q.event_health(store)
    assert h["events"] == 9
    assert h["problems"] == [
        {"source": "pricing-legacy", "type": "PriceUpdate", "problem": "type_not_past_tense",
         "count": 2},
        {"source": "pricing-legacy", "type": "PriceUpdate", "problem": "missing_time",
         "count": 1}]
    assert h["untraced"] == [{"source": "pricing-legacy", "type": "PriceUpdate", "count": 2}]
    assert h["untraced_total"] == 2
    assert h["schema_versions"] == [
        {"type": "PriceUpdate", "schema_version": "2", "count": None},
        {"type": "order.placed", "schema_version": "1", "count": None},
        {"type": "order.shipped", "schema_version": "1", "count": None},
        {"type": "payment.completed", "schema_version": "1", "count": None}]
    assert q.event_health(store, since_ms=T0 + 400_100)["events"] == 1


def test_graph_window_learns_edges_from_recent_traffic(store: q.Store) -> None:
    """Emits edges from events with the reaction time, consumed_by edges from CONSUMER spans
    with latency."""
    g = q.graph_window(store, since_ms=T0)
    edges = {(e["source"], e["target"], e["kind"]): e for e in g["edges"]}
    assert edges[("order-service", "order.placed", "emits")]["count"] == 3
    consumed = edges[("order.placed", "payment-service", "consumed_by")]
    assert (consumed["count"], consumed["p50_ms"], consumed["p95_ms"]) == (3, 20, 20)
    paid = edges[("payment-service", "payment.completed", "emits")]
    # e1-paid, published twice, counts once, with its duplicate anomaly (ord-2's stuck flow
    # names no service: on no edge); payment-service publishes 40 ms after its processing of
    # order.placed began
    assert (paid["count"], paid["anomaly_count"], paid["p50_ms"], paid["p95_ms"]) == (
        2, 1, 40, 40)
    assert edges[("order-service", "order.placed", "emits")]["p50_ms"] is None  # a root
    assert q.graph_window(store, since_ms=T0 + 500_000) == {"nodes": [], "edges": []}


def test_edge_anomalies_of_a_window(store: q.Store) -> None:
    """A group's anomaly sits on the consumed_by edge to its service, one without a group on
    the service's emits edge, one naming no service on none; a window counts those detected
    in it."""
    assert q.edge_anomalies(store) == {
        ("order.placed", "audit-service", "consumed_by"): 1,
        ("payment-service", "payment.completed", "emits"): 1}
    assert q.edge_anomalies(store, since_ms=T0 + 600_000) == q.edge_anomalies(store)
    assert q.edge_anomalies(store, since_ms=T0 + 600_001) == {}


def test_graph_window_counts_like_the_learned_graph(tmp_path: Path) -> None:
    """On the same data the window counts every edge and times it as the collector's learned
    graph does: a duplicate publish once, each record without an id, each CONSUMER span once,
    a reaction from the processing that published, the same percentiles."""
    from choreoscope.collector import query
    from choreoscope.collector.analyze import analyze
    from choreoscope.collector.store import Store, schema
    from tests.dashboard.store_rows import _event, _span

    t, t4 = f"{1:032x}", f"{4:032x}"
    events = [
        _event("orders", 0, "a1", "order.placed", "order-service", "c1", None, T0, trace=t),
        _event("orders", 1, "a1", "order.placed", "order-service", "c1", None, T0 + 100,
               trace=t),  # published twice
        _event("orders", 2, None, "order.placed", "order-service", "c2", None, T0 + 200),
        _event("orders", 3, None, "order.placed", "order-service", "c3", None, T0 + 300),
        _event("payments", 0, "b1", "payment.completed", "payment-service", "c1", "a1",
               T0 + 200, trace=t),
        _event("payments", 1, "b1", "payment.completed", "payment-service", "c1", "a1",
               T0 + 253, trace=t),  # published again, 3 ms after a1's second delivery
        _event("orders", 4, "a4", "order.placed", "order-service", "c4", None, T0 + 500,
               trace=t4),
        _event("payments", 2, "b4", "payment.completed", "payment-service", "c4", "a4",
               T0 + 903, trace=t4),
    ]
    spans = [_span(t, f"{n:016x}", None, "process orders", "consumer", "payment-service",
                   T0 + at, 5, message_id="a1", group="payments")
             for n, at in ((2, 150), (3, 250))]  # a1 delivered twice, once per copy
    # a4 processed without a payment, then again: that processing published b4 3 ms later
    spans += [_span(t4, f"{n:016x}", None, "process orders", "consumer", "payment-service",
                    T0 + at, 5, message_id="a4", group="payments")
              for n, at in ((4, 510), (5, 900))]
    # OpenTelemetry's own instrumentation beside ours: its `receive` half of the first
    # processing of a4 (no group, the same service and message) is not a processing of its own
    spans.append(_span(t4, f"{6:016x}", None, "orders receive", "consumer", "payment-service",
                       T0 + 505, 1, message_id="a4"))
    url = f"sqlite:///{tmp_path / 'g.db'}"
    writable = Store(url).create()
    with writable.engine.begin() as conn:
        writable.insert_ignore(conn, schema.events, events)
        writable.insert_ignore(conn, schema.spans, spans)
    analyze(writable)
    writable.dispose()
    store = q.open_readonly(url)
    window = {(e["source"], e["target"], e["kind"]): e
              for e in q.graph_window(store, since_ms=T0)["edges"]}
    learned = {(e["source"], e["target"], e["kind"]):
               (e["count"], e["p50_ms"], e["p95_ms"], e["anomaly_count"])
               for e in query.graph(store)["edges"]}
    # reactions: b1 50 ms after a1's first processing (its first publish; not its second
    # publish, 3 ms after the second delivery), b4 3 ms after a4's
    # second; processings 150 and 250 ms after a1's first publish, 10 and 400 after a4's.
    # Anomalies on the edge of the service they name: order-service's duplicate publish of
    # a1, its four untraced events (a1 and a4 without their producer span, the two without
    # an id with no trace context), its two stuck flows (c2, c3);
    # payment-service's duplicate publish of b1 and two events without a producer span; the
    # deliveries of a1 and a4 twice to the group payments (on the consumed_by edge).
    assert {k: (e["count"], e["p50_ms"], e["p95_ms"], e["anomaly_count"])
            for k, e in window.items()} == learned == {
        ("order-service", "order.placed", "emits"): (4, None, None, 7),
        ("order.placed", "payment-service", "consumed_by"): (4, 200.0, 377.5, 2),
        ("payment-service", "payment.completed", "emits"): (2, 26.5, pytest.approx(47.65), 3)}


def test_out_of_order_pages_and_groups(store: q.Store) -> None:
    """Out-of-order rows are filtered and paged; groups are counted."""
    page = q.out_of_order(store, group="audit")
    assert page["total"] == 1
    row = page["rows"][0]
    assert (row["event_id"], row["subkind"], row["group"]) == ("e2-placed", "causal", "audit")
    assert row["trace_id"] == f"{2:032x}"  # the late event's trace
    assert [r["event_id"] for r in row["extra"]["observed"]] == ["e2-paid", "e2-placed"]
    assert q.out_of_order(store, group="other")["total"] == 0
    assert [(g["group"], g["count"]) for g in q.out_of_order_groups(store)] == [("audit", 1)]
    # by id (an arrival left open on another page), still within the filters
    assert [r["event_id"] for r in q.out_of_order(store, ids=[row["id"]])["rows"]] == [
        "e2-placed"]
    assert q.out_of_order(store, ids=[row["id"]], subkind="time")["rows"] == []
    assert q.out_of_order(store, ids=[])["rows"] == []


def test_out_of_order_groups_and_over_time_follow_the_filters(store: q.Store) -> None:
    """The per-group table and the chart count only the arrivals the list's filters keep."""
    assert q.out_of_order_groups(store, subkind="sequence") == []
    assert q.out_of_order_groups(store, subject="ord_1") == []
    assert [(g["group"], g["subkind"], g["count"]) for g in q.out_of_order_groups(
        store, group="audit", subject="ord_2", subkind="causal")] == [("audit", "causal", 1)]
    one = [{"at_ms": T0 + 600_000, "count": 1}]
    assert q.anomalies_over_time(store, kind="out_of_order", group="audit")["rows"] == one
    for empty in ({"subkind": "sequence"}, {"group": "payments"}, {"subject": "ord_1"}):
        assert q.anomalies_over_time(store, kind="out_of_order", **empty)["rows"] == []


def test_flow_headers_and_anomalies(store: q.Store) -> None:
    """A flow's stored headers by bus position, and its anomalies oldest first."""
    headers = q.flow_headers(store, "ord-1")
    assert headers["orders/0/0"] == {"ce_id": "e1-placed", "ce_type": "order.placed",
                                     "ce_source": "order-service"}
    assert [a["kind"] for a in q.flow_anomalies(store, "ord-2")] == ["out_of_order",
                                                                      "stuck_flow"]


def test_injection_strings_are_parameters(store: q.Store) -> None:
    """Filter values are bound, never spliced: a quote matches nothing and breaks nothing."""
    assert q.out_of_order(store, group="x' OR '1'='1", subject="'; DROP TABLE events; --") == {
        "total": 0, "rows": []}
    assert q.flow_headers(store, "' OR 1=1 --") == {}


def test_schema_versions_counts_only_mixed_types(tmp_path: Path) -> None:
    """Versions per type by index skips; a type mixing versions gets counts per version."""
    from choreoscope.collector.store import Store, schema
    from tests.dashboard.store_rows import _event

    url = f"sqlite:///{tmp_path / 'v.db'}"
    store = Store(url).create()
    rows = [_event("t", i, f"e{i}", etype, "svc", None, None, T0, version=version)
            for i, (etype, version) in enumerate([
                ("a.created", "1"), ("a.created", "2"), ("a.created", "2"),
                ("b.created", None), (None, "1"), ("c.created", "3")])]
    with store.engine.begin() as conn:
        store.insert_ignore(conn, schema.events, rows)
    store.dispose()
    assert q.schema_versions(q.open_readonly(url)) == [
        {"type": None, "schema_version": "1", "count": None},
        {"type": "a.created", "schema_version": "1", "count": 1},
        {"type": "a.created", "schema_version": "2", "count": 2},
        {"type": "b.created", "schema_version": None, "count": None},
        {"type": "c.created", "schema_version": "3", "count": None}]


def test_anomalies_over_time_picks_a_bucket(store: q.Store) -> None:
    """Detections are counted per bucket; one detection time gives one one-minute bar."""
    assert q.anomalies_over_time(store, kind="out_of_order") == {
        "bucket_ms": 60_000, "rows": [{"at_ms": T0 + 600_000, "count": 1}]}
    assert q.anomalies_over_time(store, kind="orphan") == {"bucket_ms": 60_000, "rows": []}
