"""Every dashboard page under AppTest, on a store with known flows, anomalies and outbox rows."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import choreoscope.dashboard
from choreoscope.collector.store import schema
from choreoscope.dashboard import data
from choreoscope.dashboard.components.fmt import md
from tests.dashboard.store_rows import (
    EVIL_TYPE,
    MD_ID,
    T0,
    add,
    fill,
    many_arrivals,
    many_flows,
    weird_rows,
)

APP = str(Path(choreoscope.dashboard.__file__).with_name("app.py"))
PAGES = ("overview", "flow_map", "flows", "out_of_order", "outbox", "variants", "event_health")


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'store.db'}"
    fill(url).dispose()
    return url


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CHOREOSCOPE_STORE", store_url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    yield


@pytest.fixture(scope="module")
def weird_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The filled store plus flows whose ids and types are URL and Markdown syntax."""
    url = f"sqlite:///{tmp_path_factory.mktemp('weird') / 'store.db'}"
    add(fill(url), weird_rows()).dispose()
    return url


@pytest.fixture
def weird(weird_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHOREOSCOPE_STORE", weird_url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)


def run(page: str = "overview", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def text_of(at: AppTest) -> str:
    """Everything a reader sees in markdown, titles, captions, alerts and tables."""
    parts = [str(e.value) for kind in ("title", "subheader", "markdown", "caption", "error",
                                       "info", "warning", "success") for e in getattr(at, kind)]
    parts += [d.value.to_string() for d in at.dataframe]
    parts += [e.label for e in at.expander]
    return "\n".join(parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(env: None, page: str) -> None:
    """Each page runs to the end on a filled store."""
    at = run(page)
    assert at.title[0].value


def test_overview_numbers(env: None) -> None:
    """The overview counts events, flows per status, anomalies, outbox backlog (and the dead
    rows beside it) and lag."""
    at = run()
    m = metrics(at)
    assert m["Events stored"] == "9"
    assert m["Events with trace context"] == "77.8%"
    assert (m["Active"], m["Completed"], m["Stuck"], m["Failed"]) == ("2", "1", "1", "1")
    assert (m["Out-of-order arrivals"], m["Duplicated events"]) == ("1", "1")
    assert m["Outbox backlog"] == "9"
    assert m["Oldest pending outbox row"] == "12 min 34 s"
    assert [x.value for x in at.markdown if "dead" in x.value] == [
        ":red[**1 dead** outbox row: event never published]"]
    assert m["Consumer lag"] == "4"


def test_overview_says_when_flows_were_analysed(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The caption under the title: not yet, then the last pass's time and duration."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    assert "· flows not analysed yet ·" in run().caption[0].value
    store.set_meta("analysis.state", '{"now_ms": 1795000000123, "elapsed_s": 75.2}')
    store.dispose()
    st.cache_data.clear()  # the page's queries are cached for a few seconds
    at = run()
    assert "· flows analysed 2026-11-18 11:06:40 UTC (the pass took 1 min 15 s) ·" in (
        at.caption[0].value)
    # days old: what the page shows is said to be as of then
    stale = [w.value for w in at.warning if "flows analysed" in w.value]
    assert len(stale) == 1 and stale[0].startswith(
        "**Stale:** flows analysed as of 2026-11-18 11:06:40 UTC, ")
    assert stale[0].endswith("ago: statuses and anomalies are as they were then (an "
                             "in-progress flow never turns stuck). The collector may be stopped.")
    store = fill(url)
    store.set_meta("analysis.state", json.dumps({"now_ms": int(time.time() * 1000) - 20_000,
                                                 "elapsed_s": 0.0}))
    store.dispose()
    st.cache_data.clear()
    assert not [w.value for w in run().warning if "flows analysed" in w.value]
    # an hour without a full pass, but passes skipped for lack of change until 10 s ago:
    # the flows stand, nothing is stale
    store = fill(url)
    now = int(time.time() * 1000)
    store.set_meta("analysis.state", json.dumps({"now_ms": now - 3_600_000, "elapsed_s": 0.0}))
    store.set_meta("analysis.checked_at_ms", str(now - 10_000))
    store.dispose()
    st.cache_data.clear()
    assert not [w.value for w in run().warning if "flows analysed" in w.value]
    # a collector analysing every minute (as it recorded): 2 minutes is not stale either
    from choreoscope.collector.query import intervals

    store = fill(url)
    intervals.record(store, poll_s=10.0, analyze_s=60.0)
    store.set_meta("analysis.checked_at_ms", str(now - 120_000))
    store.dispose()
    st.cache_data.clear()
    assert not [w.value for w in run().warning if "flows analysed" in w.value]


def test_a_young_store_without_outbox_or_lag(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Events of the last two minutes are a rate over those two minutes, not over five; no
    outbox monitored and no lag measured show as no figure, not as 0."""
    from choreoscope.collector.store import Store
    from tests.dashboard.store_rows import _event

    url = f"sqlite:///{tmp_path / 'store.db'}"
    now = int(time.time() * 1000)
    rows = [_event("orders", i, f"e{i}", "order.placed", "shop", f"c{i}", None,
                   now - 120_000 + i * 3_000) for i in range(40)]
    add(Store(url).create(), {schema.events: rows}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    m = metrics(run())
    [(label, rate)] = [(k, v) for k, v in m.items() if k.startswith("Events / min")]
    assert re.fullmatch(r"Events / min \(last 2\.\d min\)", label), label
    assert float(rate) == pytest.approx(20.0, rel=0.05)
    assert (m["Outbox backlog"], m["Consumer lag"]) == ("—", "—")


def charts(at: AppTest) -> list[dict[str, Any]]:
    """The Vega-Lite specs of the page's charts."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def domain_ms(x: dict[str, Any]) -> list[int]:
    """An x channel's scale domain (Vega-Lite DateTime objects, UTC) in epoch milliseconds."""
    return [int(datetime(d["year"], d["month"], d["date"], d["hours"], d["minutes"],
                         d["seconds"], d["milliseconds"] * 1000, tzinfo=UTC).timestamp() * 1000)
            for d in x["scale"]["domain"]]


def test_time_charts_span_their_whole_window(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Events and anomalies per minute are drawn over the whole hour, each bar over its whole
    minute, though only a few minutes have any; out-of-order detections over their own span
    and one bucket either side."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    now = int(time.time() * 1000)
    with store.engine.begin() as conn:
        store.insert_ignore(conn, schema.anomalies, [
            {"key": f"duplicate:recent:{n}", "kind": "duplicate", "subkind": "publish",
             "correlation_id": "ord-1", "event_id": "e1-paid", "subject": "ord_1",
             "service": None, "group_name": None, "detail": "published twice", "extra": None,
             "detected_at_ms": now - n * 60_000} for n in (1, 2)])
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    minute = {"unit": "utcyearmonthdatehoursminutes", "step": 1}
    events, _by_kind, per_minute = (c["encoding"]["x"] for c in charts(run()))
    # the last event was stored at T0 + 6 min 41 s: the hour up to then, by whole minutes
    assert (events["timeUnit"], domain_ms(events)) == (minute, [T0 - 54 * 60_000,
                                                                T0 + 7 * 60_000])
    start, end = domain_ms(per_minute)
    assert (per_minute["timeUnit"], end - start, start % 60_000) == (minute, 61 * 60_000, 0)
    assert now - 3_660_000 < start <= now - 3_540_000
    (over_time,) = (c["encoding"]["x"] for c in charts(run("out_of_order")))
    assert (over_time["timeUnit"], domain_ms(over_time)) == (minute, [T0 + 9 * 60_000,
                                                                       T0 + 12 * 60_000])


def chart_data(at: AppTest) -> list[pd.DataFrame]:
    """The data drawn by each of the page's charts."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [convert_arrow_bytes_to_pandas_df(c.proto.datasets[0].data.data)
            for c in at.get("vega_lite_chart")]


def test_per_minute_tooltips_give_the_minute_in_utc(env: None) -> None:
    """Hovering a bar of events per minute or of out-of-order detections names its minute in
    UTC, not only its date (Vega-Lite's own format of a time field, in the browser's zone)."""
    at = run()
    tooltip = charts(at)[0]["encoding"]["tooltip"]
    assert tooltip == [{"field": "at", "type": "nominal", "title": "minute"},
                       {"field": "count", "type": "quantitative"}]
    events = chart_data(at)[0]
    assert events.loc[events["count"] > 0, ["at", "count"]].values.tolist() == [
        ["2026-01-01 00:01:00 UTC", 4], ["2026-01-01 00:02:00 UTC", 2],
        ["2026-01-01 00:03:00 UTC", 1], ["2026-01-01 00:06:00 UTC", 2]]
    at = run("out_of_order")
    assert charts(at)[0]["encoding"]["tooltip"] == [
        {"field": "at", "type": "nominal", "title": "from"},
        {"field": "count", "type": "quantitative"}]
    assert chart_data(at)[0][["at", "count"]].values.tolist() == [
        ["2026-01-01 00:10:00 UTC", 1]]


def test_flow_map_draws_the_collectors_dot(env: None) -> None:
    """The flow map's graphviz chart holds the learned edges, the anomalous one in red."""
    at = run("flow_map")
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"svc:order-service" -> "type:order.placed" [label="3"];' in dot
    assert ('"type:order.placed" -> "svc:payment-service" [label="3, p95 20 ms", '
            'tooltip="1 anomalies", color="red"') in dot
    assert '"type:payment.completed" -> "svc:shipping-service" [label="1, p95 140 ms"];' in dot


def test_flow_map_draws_the_main_choreography_apart_from_unrelated_services(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A legacy producer no edge joins to the shop is drawn below it, not beside it: the
    shop's map gets the whole width."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    with store.engine.begin() as conn:
        conn.execute(schema.graph_edges.insert(), [
            {"source": "pricing-legacy", "target": "PriceUpdate", "kind": "emits", "count": 2,
             "p50_ms": None, "p95_ms": None, "anomaly_count": 0}])
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    charts = [c.proto.spec for c in run("flow_map").get("graphviz_chart")]
    assert len(charts) == 2
    assert '"svc:order-service" -> "type:order.placed"' in charts[0]
    assert "pricing-legacy" not in charts[0]
    assert '"svc:pricing-legacy" -> "type:PriceUpdate" [label="2"];' in charts[1]


def test_flow_map_of_a_quiet_window_says_it_had_no_traffic(env: None) -> None:
    """A window without traffic says so, not that nothing was learned: the store has a map."""
    at = run("flow_map", window="15m")
    assert [i.value for i in at.info] == [
        "No traffic in the last 15 minutes: the map of that window is empty. Choose a longer "
        "window, or all time for the choreography the collector has learned."]
    assert not at.get("graphviz_chart")


def test_flows_table_lists_flows_newest_first(env: None) -> None:
    """The flows table shows every flow, most recently active first, without Jaeger links."""
    df = run("flows").dataframe[0].value
    assert df["correlation_id"].tolist() == ["legacy-1", "legacy-2", "ord-3", "ord-2", "ord-1"] \
        or df["correlation_id"].tolist()[2:] == ["ord-3", "ord-2", "ord-1"]
    assert "jaeger" not in df.columns


def test_flows_status_filter_comes_from_the_url(env: None) -> None:
    """`?status=stuck` filters the table and sets the status box."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/flows.py")
    at.query_params["status"] = "stuck"
    at.run()
    assert at.dataframe[0].value["correlation_id"].tolist() == ["ord-2"]
    assert at.selectbox(key="flows:status").value == "stuck"


def test_a_filter_in_the_url_in_another_case_or_unknown(env: None) -> None:
    """`?status=STUCK` is the `stuck` filter; `?status=bogus` and `?window=5m` name no
    filter: the page says it left them out instead of showing everything as if filtered."""
    at = run("flows", status="STUCK")
    assert at.dataframe[0].value["correlation_id"].tolist() == ["ord-2"]
    assert at.warning == []
    at = run("flows", status="bogus", window="5m")
    assert len(at.dataframe[0].value) == len(run("flows").dataframe[0].value)
    warnings = [w.value for w in at.warning]
    assert warnings[0].startswith("The address's `status=bogus` names no such filter "
                                  "(expected one of `in_progress`, `completed`, `stuck`, "
                                  "`failed`): it is left out.")
    assert warnings[1].startswith("The address's `window=5m` names no such filter")
    assert "status" not in at.query_params and "window" not in at.query_params


def test_deep_link_opens_the_flow_detail(env: None) -> None:
    """`/?flow=ord-1` opens the Flows page with ord-1's detail: counts, causal tree, payloads."""
    at = run(flow="ord-1")
    assert at.title[0].value == "Flows"
    assert at.text_input(key="flows:flow").value == "ord-1"
    assert [s.value for s in at.subheader] == ["Flow `ord-1`"]
    # the detail is below the table: a link at the top says so and scrolls there
    assert at.markdown[0].value == (":material/arrow_downward: [Flow `ord-1` is shown below "
                                    "the table](#flow-detail)")
    assert at.subheader[0].proto.anchor == "flow-detail"
    m = metrics(at)
    assert (m["Events"], m["Duration"], m["Anomalies"]) == ("3", "200 ms", "1")
    tree = next(md.value for md in at.markdown if md.value.startswith("- **`order.placed`**"))
    lines = tree.splitlines()
    assert lines[0].startswith("- **`order.placed`** by `order-service`")
    assert lines[1].startswith("    - **`payment.completed`** by `payment-service`")
    assert lines[2].startswith("        - **`order.shipped`** by `shipping-service`")
    assert "duplicate" in lines[3] and lines[3].startswith("    - **`payment.completed`**")
    assert any(c.value.startswith("Each event under the event that caused it, with the time it "
                                  "reached the bus (UTC)") for c in at.caption)
    labels = [e.label for e in at.expander]
    assert "`order.placed` · `order-service` · `orders/0/0`" in labels
    assert any(json.loads(j.value) == {"order_id": "ord_1", "card": "[REDACTED]"} for j in at.json)


def test_unknown_flow_says_so(env: None) -> None:
    """A deep link to a flow the store does not know shows a warning, not an error."""
    at = run("flows", flow="nope")
    assert [w.value for w in at.warning] == [
        "No flow with correlation id, event id or trace id `nope` in the store."]


def test_an_id_of_an_outbox_row_not_on_the_bus_names_the_row(env: None) -> None:
    """As `choreoscope flow` does: an id that names no flow but a stuck or dead outbox row
    says which row holds it, whose event never reached the bus."""
    at = run("flows", flow="0190a0a0-0000-7000-8000-000000000001")
    assert [w.value for w in at.warning] == [
        "No flow with correlation id, event id or trace id "
        "`0190a0a0-0000-7000-8000-000000000001` in the store.\n\n"
        "Outbox `orders-db` holds its dead row `0190a0a0-0000-7000-8000-000000000001` "
        "(`order.placed`, 5 attempts): its event never reached the bus (the Outbox page "
        "shows it)."]


def test_open_flow_finds_it_by_an_event_id_or_trace_id(env: None) -> None:
    """As `choreoscope flow ID`: the flow of an event id, or of a trace id in any case."""
    at = run("flows", flow="e2-paid")
    assert ([s.value for s in at.subheader], at.warning.len) == (["Flow `ord-2`"], 0)
    # the link down to the detail names the flow shown, and what opened it
    assert at.markdown[0].value == (":material/arrow_downward: [Flow `ord-2` (of `e2-paid`) "
                                    "is shown below the table](#flow-detail)")
    at = run("flows", flow=f"{3:032X}")
    assert ([s.value for s in at.subheader], at.warning.len) == (["Flow `ord-3`"], 0)
    at = run("flows", flow="  ord-1\t")  # pasted with spaces around it
    assert ([s.value for s in at.subheader], at.warning.len) == (["Flow `ord-1`"], 0)
    assert at.markdown[0].value.startswith(":material/arrow_downward: [Flow `ord-1` is shown")
    at = run("flows", flow="nope")
    assert not any("is shown below" in m.value for m in at.markdown)


def test_jaeger_links_only_with_a_jaeger_ui(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a Jaeger UI the table links each flow's trace as `{ui}/trace/{id}`."""
    monkeypatch.setenv("CHOREOSCOPE_JAEGER_UI", "http://jaeger:16686/")
    at = run("flows", flow="ord-1")
    df = at.dataframe[0].value
    row = df[df["correlation_id"] == "ord-1"].iloc[0]
    assert row["jaeger"] == "http://jaeger:16686/trace/" + f"{1:032x}"
    assert [b.proto.url for b in at.get("link_button")] == [
        "http://jaeger:16686/trace/" + f"{1:032x}"]


def test_a_flow_of_many_records_pages_its_payloads_and_links_a_few_traces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow of 45 records in 7 traces draws 20 payload expanders a page and 5 Jaeger
    buttons, with the rest said (an expander and a button each made the page take 11 s to
    draw at 81 records)."""
    from tests.dashboard.store_rows import _event, flow_row

    url = f"sqlite:///{tmp_path / 'store.db'}"
    traces = [f"{n:032x}" for n in range(1, 8)]
    rows = [_event(topic, i, f"{flow}{i}", "order.noted", "order-service", flow,
                   f"{flow}{i - 1}" if i else None, T0 + i, trace=traces[i % 7])
            for flow, topic in (("big", "notes"), ("big2", "notes2")) for i in range(45)]
    add(fill(url), {schema.events: rows, schema.flows: [
        flow_row(flow, "completed", T0, T0 + 44, ["order.noted"] * 45, {"order-service"},
                 traces) for flow in ("big", "big2")]}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.setenv("CHOREOSCOPE_JAEGER_UI", "http://jaeger:16686")
    at = run("flows", flow="big")
    assert [b.proto.url for b in at.get("link_button")] == [
        f"http://jaeger:16686/trace/{t}" for t in traces[:5]]
    assert "2 more traces: the Spans tab links each span to its trace." in [
        c.value for c in at.caption]
    labels = [e.label for e in at.expander]
    assert (len(labels), labels[0], labels[-1]) == (
        20, "`order.noted` · `order-service` · `notes/0/0`",
        "`order.noted` · `order-service` · `notes/0/19`")
    assert "Records 1 to 20 of 45." in [c.value for c in at.caption]
    at.number_input(key="flow_detail:events:page").set_value(3).run()
    assert [e.label for e in at.expander] == [
        f"`order.noted` · `order-service` · `notes/0/{i}`" for i in range(40, 45)]
    assert "Records 41 to 45 of 45." in [c.value for c in at.caption]
    at.query_params["flow"] = "big2"  # another flow opens at its first records
    at.run()
    assert "Records 1 to 20 of 45." in [c.value for c in at.caption]


def test_a_flow_whose_traces_were_not_sampled_links_no_trace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow the collector found unsampled (its producers' samplers recorded nothing) gets
    no Jaeger link, which would open "trace not found": its detail says why."""
    from sqlalchemy import update

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    with store.engine.begin() as conn:
        conn.execute(update(schema.flows).where(schema.flows.c.correlation_id == "ord-1")
                     .values(trace_status="unsampled"))
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.setenv("CHOREOSCOPE_JAEGER_UI", "http://jaeger:16686/")
    at = run("flows", flow="ord-1")
    df = at.dataframe[0].value
    assert df[df["correlation_id"] == "ord-1"].iloc[0]["jaeger"] == ""
    assert (df[df["correlation_id"] != "ord-1"]["jaeger"] != "").any()
    assert at.get("link_button") == []
    assert f"Its producers' samplers recorded none of its traces (`{1:032x}`): no tracing " \
           "backend has them." in [c.value for c in at.caption]


def test_out_of_order_arrivals_link_the_late_events_trace(
        env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each arrival opens the trace of the event that came late in Jaeger (with a Jaeger UI)."""
    assert not run("out_of_order").get("link_button")
    monkeypatch.setenv("CHOREOSCOPE_JAEGER_UI", "http://jaeger:16686")
    at = run("out_of_order")
    assert [b.proto.url for b in at.get("link_button")] == [
        "http://jaeger:16686/trace/" + f"{2:032x}"]


def test_out_of_order_explains_expected_and_observed(env: None) -> None:
    """The late event is named and both orders are listed with both events' times."""
    at = run("out_of_order")
    assert "causal · `order.placed` `e2-placed` late at group `audit` · subject `ord_2`" in [
        e.label for e in at.expander]
    tables = [d.value for d in at.dataframe]
    expected, observed = tables[1], tables[2]
    assert expected["event id"].tolist() == ["e2-placed", "e2-paid"]
    assert observed["event id"].tolist() == ["e2-paid", "e2-placed"]
    assert observed["processed"].tolist() == ["00:02:00.500000", "00:02:00.900000"]
    assert expected["on the bus"].tolist() == ["00:02:00.000", "00:02:00.060"]


def test_out_of_order_titles_leave_out_what_an_arrival_lacks() -> None:
    """An arrival without a type, id, group or subject gets no doubled space or dangling dot."""
    from choreoscope.dashboard.views.out_of_order import expander_title

    bare = {"subkind": "time", "extra": {}, "event_id": None, "group": None, "subject": None}
    assert expander_title(bare) == "time · an event late at the bus"
    assert expander_title({**bare, "event_id": "e7"}) == "time · `e7` late at the bus"
    assert expander_title({**bare, "extra": {"type": "a.b"}, "group": "g"}) == (
        "time · `a.b` late at group `g`")


def test_an_order_table_leaves_a_missing_sequence_blank() -> None:
    """An event without ce_sequence beside one with it shows an empty cell, not a grey
    "None"; a table where no event has one leaves the column out."""
    from choreoscope.dashboard.views.out_of_order import order_table

    one = {"type": "a.b", "event_id": "e1", "sequence": 3, "topic": "t", "partition": 0,
           "offset": 1}
    table = order_table([one, {**one, "event_id": "e2", "sequence": None}])
    assert table["sequence"].tolist() == ["3", ""]
    assert "sequence" not in order_table([{**one, "sequence": None}]).columns


def test_an_order_table_shows_processing_starts_to_the_microsecond() -> None:
    """Two handlers starting within one millisecond keep their order on screen: processing
    starts come from spans, in microseconds; bus and event times stay in milliseconds."""
    from choreoscope.dashboard.views.out_of_order import order_table

    at_ms = 1764135314123
    first = {"type": "a.b", "event_id": "e1", "time_ms": at_ms, "broker_ts_ms": at_ms,
             "processed_at_us": at_ms * 1000 + 45}
    table = order_table([first, {**first, "event_id": "e2", "processed_at_us": at_ms * 1000
                                 + 812}, {**first, "event_id": "e3",
                                          "processed_at_us": None}])
    assert table["processed"].tolist() == ["05:35:14.123045", "05:35:14.123812", "—"]
    assert table["on the bus"].tolist() == ["05:35:14.123"] * 3
    assert table["event time"].tolist() == ["05:35:14.123"] * 3


def test_out_of_order_table_and_chart_follow_the_filters(env: None) -> None:
    """With a kind no arrival has, the page shows no group table or chart, only the count."""
    at = run("out_of_order", subkind="sequence")
    assert at.selectbox(key="out_of_order:subkind").value == "sequence"
    assert (len(at.dataframe), len(at.get("vega_lite_chart")), len(at.expander)) == (0, 0, 0)
    assert "**0 arrivals** match the filters" in [m.value for m in at.markdown]
    at = run("out_of_order", group="audit")
    assert at.dataframe[0].value["group"].tolist() == ["audit"]
    assert len(at.get("vega_lite_chart")) == 1


def test_outbox_shows_sources_stuck_rows_and_unreachable(env: None) -> None:
    """Each source's figures, its stuck rows with a flow link, and an unreachable source."""
    at = run("outbox")
    m = [(x.label, x.value) for x in at.metric]
    assert m[:4] == [("Pending", "2"), ("Dead", "0"), ("Oldest pending", "30.0 s"),
                     ("Publish lag p95", "—")]  # billing-db (sorted by name)
    assert m[4:8] == [("Pending", "7"), ("Dead", "1"), ("Oldest pending", "12 min 34 s"),
                      ("Publish lag p95", "230 ms")]
    assert at.error[0].value.startswith("Unreachable: `connection to "
                                        "postgresql://billing:***@db.internal/billing refused`. "
                                        "Last good poll: 2026-01-01 00:05:00.")
    stuck = at.dataframe[0].value
    assert stuck["aggregate"].tolist() == ["orders/ord_7"]
    assert stuck["flow"].tolist() == ["flows?flow=ord-2"]
    # the row is dead, not stuck pending: the heading says which
    assert [x.value for x in at.markdown if x.value.endswith(" row**")] == ["**1 dead row**"]


def test_a_stuck_row_that_never_reached_the_bus_has_no_flow_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead row's event was never published: no flow exists to link to, and the page says
    why the link is missing."""
    from sqlalchemy import select, update

    from choreoscope.collector.store import Store

    url = f"sqlite:///{tmp_path / 'store.db'}"
    fill(url).dispose()
    store = Store(url)
    with store.engine.begin() as conn:
        row = conn.execute(select(schema.outbox_sources.c.stuck).where(
            schema.outbox_sources.c.source == "orders-db")).scalar_one()
        stuck = json.loads(row)
        stuck.append({**stuck[0], "id": "0190a0a0-0000-7000-8000-000000000002",
                      "correlation_id": "ord-never-published"})
        conn.execute(update(schema.outbox_sources).where(
            schema.outbox_sources.c.source == "orders-db").values(stuck=json.dumps(stuck)))
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    at = run("outbox")
    links = at.dataframe[0].value["flow"].tolist()
    assert links == ["flows?flow=ord-2", ""]  # an empty cell, not Streamlit's grey "None"
    assert any(c.value.startswith("A row without a flow link never reached the bus")
               for c in at.caption)


def test_flow_links_are_relative_and_encode_the_id(weird: None) -> None:
    """A correlation id holding a space, `/`, `&`, `#`, `?` and `%` is encoded whole in the
    Variants and Outbox links, relative to the page (so they work under a base path)."""
    link = "flows?flow=ord%207%2Fx%26y%23z%3Fq%3D1%2520"
    at = run("variants", variant="order.placed > order.shipped")
    assert at.dataframe[1].value["flow"].tolist() == [link]
    tables = [d.value for d in run("outbox").dataframe]
    assert [t["flow"].tolist() for t in tables if "flow" in t] == [["flows?flow=ord-2"], [link]]


def test_outbox_and_lag_say_when_they_were_measured(env: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each outbox source's figures and the lag carry the time of their last measurement: a
    caption while recent, a warning once older than three polls (10 s apart)."""
    monkeypatch.delenv("CHOREOSCOPE_POLL_INTERVAL", raising=False)
    monkeypatch.setattr(data, "now_ms", lambda: T0 + 605_000)  # 5 s after the last poll
    at = run("outbox")
    stale = ("**Stale:** {} as of 00:{} UTC, {} ago, though the collector measures every 10 s. "
             "It may be stopped, or unable to measure.")
    assert [w.value for w in at.warning] == [stale.format("Figures and ages", "05:00", "5 min")]
    assert {"Figures and ages as of 00:10:00 UTC, 5 s ago",
            "Lag as of 00:10:00 UTC, 5 s ago"} <= {c.value for c in at.caption}
    monkeypatch.setattr(data, "now_ms", lambda: T0 + 900_000)  # the collector stopped
    at = run("outbox")
    assert [w.value for w in at.warning] == [
        stale.format("Figures and ages", "05:00", "10 min"),  # billing-db, unreachable
        stale.format("Figures and ages", "10:00", "5 min"),  # orders-db
        stale.format("Lag", "10:00", "5 min")]
    captions = {c.value for c in run().caption}
    assert {":orange[:material/history: **Stale:** Lag measured as of 00:10:00 UTC, 5 min ago]",
            ":orange[:material/history: **Stale:** Outbox measured as of 00:05:00 UTC, "
            "10 min ago]"} <= captions


def test_figures_are_judged_by_the_interval_the_collector_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector polling every 10 minutes recorded so in the store: figures measured 5 and
    10 minutes ago are not stale, though the dashboard's own settings say 10 s."""
    from choreoscope.collector.query import intervals

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    intervals.record(store, poll_s=600.0, analyze_s=5.0)
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    monkeypatch.delenv("CHOREOSCOPE_POLL_INTERVAL", raising=False)
    monkeypatch.setattr(data, "now_ms", lambda: T0 + 900_000)
    at = run("outbox")
    assert [w.value for w in at.warning] == []
    assert {"Figures and ages as of 00:05:00 UTC, 10 min ago",
            "Figures and ages as of 00:10:00 UTC, 5 min ago",
            "Lag as of 00:10:00 UTC, 5 min ago"} <= {c.value for c in at.caption}


def test_an_outbox_never_reached_is_unreachable_without_figures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outbox source unreachable since it was first polled is said to be unreachable with
    no figures yet, on the overview and the outbox page, never shown as a backlog of 0."""
    from sqlalchemy import delete

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    with store.engine.begin() as conn:
        conn.execute(delete(schema.outbox_sources))
    add(store, {schema.outbox_sources: [
        {"source": "billing", "table_name": "outbox", "reachable": False,
         "last_poll_ms": T0 + 600_000, "last_ok_ms": None,
         "last_error": "connection to 127.0.0.1:1 refused", "pending": None, "dead": None,
         "oldest_pending_age_s": None, "publish_lag_p95_ms": None, "stuck": None}]}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run()
    assert (metrics(at)["Outbox backlog"], metrics(at)["Oldest pending outbox row"]) == (
        "—", "—")
    assert [e.value for e in at.error] == [
        "1 outbox source(s) unreachable; 1 never measured, with no figures yet"]
    assert not [c.value for c in at.caption if "Outbox" in c.value]
    at = run("outbox")
    assert [e.value for e in at.error] == [
        "Unreachable: `connection to 127.0.0.1:1 refused`. It has never answered a poll "
        "(last tried 2026-01-01 00:10:00 UTC): there are no figures yet."]
    assert at.metric.len == 0  # no Pending 0, Dead 0
    assert [w.value.split(" as of ")[0] for w in at.warning] == ["**Stale:** Lag"]


def test_no_page_shows_a_password(env: None) -> None:
    """Database passwords in stored errors never reach the screen."""
    for page in PAGES:
        assert "hunter2" not in text_of(run(page))


def test_variants_counts_shares_and_flows(env: None) -> None:
    """Variants are counted with their share; the flow list follows `?variant=`."""
    at = run("variants", variant="order.placed > payment.completed")
    v = at.dataframe[0].value
    assert v["variant"].tolist()[0] == "PriceUpdate"
    assert dict(zip(v["variant"], v["count"], strict=True)) == {
        "PriceUpdate": 2, "order.placed": 1, "order.placed > payment.completed": 1,
        "order.placed > payment.completed > order.shipped": 1}
    assert v["share %"].tolist()[0] == pytest.approx(40.0)
    flows = at.dataframe[1].value
    assert flows["flow"].tolist() == ["flows?flow=ord-2"]


def test_a_variant_shown_at_five_percent_is_not_rare(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """31 of 621 flows (4.99%) show as 5.0% and are not highlighted rare under "fewer than
    5%"; 30 (4.83%) show as 4.8% and are."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    flows = (many_flows("near", 31, ["near.happened"]) + many_flows("few", 30, ["few.happened"])
             + many_flows("bulk", 621 - 5 - 61, ["bulk.happened"]))
    add(fill(url), {schema.flows: flows}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    v = run("variants").dataframe[0].value.set_index("variant")
    assert v.loc[["near.happened", "few.happened"], ["count", "share %", "rare"]].values.tolist() \
        == [[31, 5.0, False], [30, 4.8, True]]


def test_variants_say_which_flows_have_no_variant(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Flows known only from dead outbox rows have no event, so no variant: the page says
    how many are left out of its total."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    eventless = [dict(row, variant="", event_types="[]", event_count=0)
                 for row in many_flows("dead", 2, ["order.placed"], status="failed")]
    add(fill(url), {schema.flows: eventless}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run("variants")
    assert "**4 variants** over 5 flows" in [m.value for m in at.markdown]
    assert ("Not counted: 2 flows known only from dead outbox rows, with no event on the "
            "bus, hence no variant (the Outbox page lists them).") in [c.value for c in at.caption]


def test_event_health_problems_versions_untraced(env: None) -> None:
    """Problems per producer and type, schema versions per type, untraced events."""
    at = run("event_health")
    problems = at.dataframe[0].value
    assert problems[["source", "type", "problem", "count"]].values.tolist() == [
        ["pricing-legacy", "PriceUpdate", "type_not_past_tense", 2],
        ["pricing-legacy", "PriceUpdate", "missing_time", 1]]
    versions = at.dataframe[1].value
    assert versions.values.tolist()[:2] == [["PriceUpdate", "v2", "one version only"],
                                            ["order.placed", "v1", "one version only"]]
    untraced = at.dataframe[2].value
    assert untraced[["source", "count"]].values.tolist() == [["pricing-legacy", 2]]
    # not "Untraced": the untraced anomalies also count events whose trace never came
    assert [s.value for s in at.subheader][-1] == "Events without trace context"
    assert metrics(at)["Without trace context"].startswith("2 (")


def test_a_flow_without_spans_says_whether_any_will_come() -> None:
    """"Yet" only where spans can still arrive: not for unsampled traces, nor for events
    that carry no trace context."""
    from choreoscope.dashboard.components.flow_detail import no_spans_note

    flow = {"trace_ids": ["a" * 32], "trace_status": "pending", "spans": []}
    assert no_spans_note(flow) == "No spans are stored for this flow yet."
    assert no_spans_note({**flow, "trace_status": "unsampled"}) == (
        "Its traces were not sampled: no spans will come.")
    assert no_spans_note({**flow, "trace_ids": [], "trace_status": "none"}) == (
        "Its events carry no trace context: no spans will come.")


def test_first_run_page_on_an_empty_store(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A store with no events shows how to get started instead of the pages."""
    from choreoscope.collector.store import Store

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Store(url).create().dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run()
    assert at.title[0].value == "Welcome to Choreoscope"
    assert "has no events yet" in at.info[0].value
    assert any("collect --bootstrap" in c.value for c in at.code)


@pytest.mark.parametrize("page", PAGES)
def test_an_outbox_watched_before_any_event_is_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    """A store with outbox figures and no event yet (the relay never reached the bus) shows
    its pages, not the first-run page; the outbox page has the figures."""
    from choreoscope.collector.store import Store

    url = f"sqlite:///{tmp_path / 'outbox-only.db'}"
    add(Store(url).create(), {schema.outbox_sources: [
        {"source": "billing", "table_name": "outbox", "reachable": True,
         "last_poll_ms": T0, "last_ok_ms": T0, "last_error": None, "pending": 3, "dead": 2,
         "oldest_pending_age_s": 389.0, "publish_lag_p95_ms": None, "stuck": "[]"}]}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run(page)
    assert at.title[0].value != "Welcome to Choreoscope"
    if page == "outbox":
        assert (metrics(at)["Pending"], metrics(at)["Dead"]) == ("3", "2")


def test_first_run_page_without_a_store_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing SQLite file is reported, not created."""
    path = tmp_path / "none.db"
    monkeypatch.setenv("CHOREOSCOPE_STORE", f"sqlite:///{path}")
    at = run("flows")
    assert at.info[0].value == f"No store yet at `{path}`. It appears when the collector first runs."
    assert not path.exists()


def test_pages_leave_the_store_untouched(env: None, store_url: str) -> None:
    """Rendering every page writes nothing: the database file is byte-for-byte the same."""
    path = store_url.removeprefix("sqlite:///")
    before = Path(path).read_bytes()
    for page in PAGES:
        run(page, flow="ord-1")
    assert Path(path).read_bytes() == before
    assert not os.path.exists(path + "-journal")


def test_changing_a_filter_keeps_the_chosen_flow(env: None) -> None:
    """A filter change reruns the page but keeps `?flow=` and its detail."""
    at = run("flows", flow="ord-1")
    at.selectbox(key="flows:status").set_value("failed").run()
    assert not at.exception
    assert at.dataframe[0].value["correlation_id"].tolist() == ["ord-3"]
    assert [s.value for s in at.subheader] == ["Flow `ord-1`"]
    assert at.query_params["flow"] == "ord-1" and at.query_params["status"] == "failed"


def test_the_table_highlights_the_flow_shown_or_none(env: None) -> None:
    """The browser keeps a table's selection as a row position: the table is a new widget
    whenever its rows change, highlighting the chosen flow where it now is, or no row (never
    the flow that took its old place)."""
    def table(at: AppTest) -> tuple[str, list[str], list[int]]:
        df = at.dataframe[0]
        default = json.loads(df.proto.selection_default or '{"selection": {"rows": []}}')
        return df.key, df.value["correlation_id"].tolist(), default["selection"]["rows"]

    at = run("flows", flow="ord-2")
    key, ids, rows = table(at)
    assert [ids[i] for i in rows] == ["ord-2"]
    at.selectbox(key="flows:status").set_value("failed").run()
    assert table(at)[1:] == (["ord-3"], []) and table(at)[0] != key
    at.selectbox(key="flows:status").set_value("").run()
    assert table(at) == (key, ids, rows)


def test_a_filter_leaving_fewer_pages_shows_the_last_one(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """On page 4 of the flows (50 a page), a filter leaving 62 flows shows page 2 of 2; on
    page 4 of the arrivals (10 a page), a filter leaving 15 shows page 2 of 2."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    add(fill(url), {schema.flows: many_flows("done", 120, ["a.happened"])
                    + many_flows("open", 60, ["b.happened"], status="in_progress"),
                    schema.anomalies: many_arrivals("bulk", 15)
                    + many_arrivals("other", 15)}).dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run("flows")
    at.number_input(key="flows:page").set_value(4).run()
    assert len(at.dataframe[0].value) == 185 - 150
    at.selectbox(key="flows:status").set_value("in_progress").run()
    assert not at.exception and not at.info
    assert (at.number_input(key="flows:page").label, at.number_input(key="flows:page").value,
            len(at.dataframe[0].value)) == ("Page (of 2)", 2, 62 - 50)
    at = run("out_of_order")
    at.number_input(key="out_of_order:page").set_value(4).run()
    assert len(at.expander) == 31 - 30
    at.text_input(key="out_of_order:group").set_value("bulk").run()
    assert not at.exception
    assert (at.number_input(key="out_of_order:page").label,
            at.number_input(key="out_of_order:page").value,
            [e.label for e in at.expander]) == (
        "Page (of 2)", 2, [f"time · `bulk-{i}` late at group `bulk` · subject `sku_9`"
                           for i in range(4, -1, -1)])


def test_refresh_interval_from_the_url_and_pausable(env: None) -> None:
    """`?refresh=10` sets the interval; pausing keeps it in the URL as `refresh=0`."""
    at = run(refresh="10")
    box = at.sidebar.selectbox[0]
    assert box.label == "Auto-refresh" and box.value == 10.0
    at.sidebar.toggle[0].set_value(True).run()
    assert at.query_params["refresh"] == "0"
    assert at.sidebar.selectbox[0].value == 10.0


def test_refresh_interval_survives_page_changes(env: None) -> None:
    """The interval from the URL, then one picked in the sidebar, stays on every page; only
    the pick is written to the URL (AppTest keeps the query over page changes; the browser
    test checks that a page opening writes nothing)."""
    at = run(refresh="10")
    seen = []
    for page in ("flows", "outbox", "overview"):
        at.switch_page(f"views/{page}.py").run()
        seen.append((at.sidebar.selectbox[0].value, at.query_params.get("refresh")))
    at.sidebar.selectbox[0].set_value(30.0).run()
    seen.append((at.sidebar.selectbox[0].value, at.query_params.get("refresh")))
    for page in ("out_of_order", "overview"):
        at.switch_page(f"views/{page}.py").run()
        seen.append((at.sidebar.selectbox[0].value, at.query_params.get("refresh")))
    assert seen == [(10.0, "10")] * 3 + [(30.0, "30")] * 3


@pytest.mark.parametrize(("page", "reader"), [("overview", "overview"),
                                               ("flows", "search_flows")])
def test_a_store_that_stops_answering_while_a_page_is_open(
        env: None, monkeypatch: pytest.MonkeyPatch, page: str, reader: str) -> None:
    """The live part of a page that finds the store gone (the page itself was fine) says so,
    password masked, instead of showing a traceback."""
    from sqlalchemy.exc import OperationalError

    def down(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("select 1", {}, ConnectionRefusedError(
            "connection to postgresql://cs:s3cret@127.0.0.1:1/store refused"))

    st.cache_data.clear()
    monkeypatch.setattr(data, reader, down)
    at = run(page)
    [error] = at.error
    assert error.value == ("**The store cannot be read right now:** `connection to "
                           "postgresql://cs:***@127.0.0.1:1/store refused`. The figures come "
                           "back when it answers; this part tries again every 5 s.")
    assert "s3cret" not in text_of(at)


def test_unreachable_store_is_reported_without_its_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that refuses connections is shown as unreachable, its password masked."""
    monkeypatch.setenv("CHOREOSCOPE_STORE", "postgresql://cs:s3cret@127.0.0.1:1/store")
    at = run("flows")
    assert at.title[0].value == "The store cannot be read"
    assert at.code.len == 0  # an outage, not a first run: no set-up steps
    assert at.error[0].value.startswith(
        "The store `postgresql://cs:***@127.0.0.1:1/store` cannot be read: ")
    assert "s3cret" not in text_of(at)


@pytest.mark.postgres
def test_the_first_run_command_never_holds_a_masked_password(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty store whose URL has a password: the command to copy reads the URL from
    CHOREOSCOPE_STORE (a masked one would not connect), and the password is shown nowhere."""
    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run("flows")
    assert at.title[0].value == "Welcome to Choreoscope"
    assert at.code[0].value == ('choreoscope --store "$CHOREOSCOPE_STORE" collect --bootstrap '
                                "localhost:9092 --otlp-port 4318")
    assert "s3cret" not in text_of(at) + "".join(c.value for c in at.code)


def test_bus_text_is_never_read_as_markdown(weird: None) -> None:
    """An event type holding a link and bold, a correlation id and subject holding backticks
    and asterisks show as typed: code spans fenced by more backticks than they hold in the
    flow title, causal tree, event labels and out-of-order titles."""
    at = run("flows", flow=MD_ID)
    assert [s.value for s in at.subheader] == ["Flow `` cid`with**md**` ``"]
    evil = "`evil [click me](http://evil.example/x) **bold**`"
    assert f"- **{evil}** by `weird-svc` · subject `` `x` `` · 00:11:40.200 · `weird/0/2`" in [
        m.value for m in at.markdown]
    assert f"{evil} · `weird-svc` · `weird/0/2`" in [e.label for e in at.expander]
    at = run("out_of_order", subkind="time")
    assert [e.label for e in at.expander] == [
        f"time · {evil} `w3` late at group `g*1*` · subject `` `x` ``"]
    assert any(m.value.startswith(f"`group g*1* processed {EVIL_TYPE} w3 late`  \n")
               for m in at.markdown)


def test_someone_elses_tables_are_reported_in_one_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A database holding an `events` table of its own, alone or beside ours, shows the
    collector's own complaint on every page instead of a traceback."""
    from sqlalchemy import create_engine

    alone, beside = tmp_path / "alone.db", tmp_path / "beside.db"
    ours = create_engine(f"sqlite:///{beside}")
    schema.metadata.create_all(ours, tables=[t for t in schema.metadata.sorted_tables
                                             if t.name != "events"])
    ours.dispose()
    for path in (alone, beside):
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE events(x int)")
            conn.execute("INSERT INTO events VALUES (1)")
    monkeypatch.setenv("CHOREOSCOPE_STORE", f"sqlite:///{alone}")
    for page in PAGES:
        at = run(page)
        assert at.title[0].value == "The store cannot be read"
        assert [e.value for e in at.error] == [
            f"The store `sqlite:///{alone}` cannot be read: " + md(
                "expected the store's tables to be Choreoscope's, but it has no table "
                "anomalies: use another database (or SQLite file)")]
    monkeypatch.setenv("CHOREOSCOPE_STORE", f"sqlite:///{beside}")
    columns = ", ".join(sorted(c.name for c in schema.events.columns  # a reader does without
                               if c.name not in schema.ADDED_COLUMNS["events"]))  # those
    assert [e.value for e in run("flows").error] == [
        f"The store `sqlite:///{beside}` cannot be read: " + md(
            f"expected the store's table events to be Choreoscope's, but it has no column "
            f"{columns}: use another database (or SQLite file)")]


def test_a_store_an_earlier_collector_wrote_is_read_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store made before the collector's bookkeeping tables existed (no `topic_ids`, no
    `trace_fetches`: not upgraded yet, its old collector may still run) shows on every page;
    the dashboard never reads those tables."""
    path = tmp_path / "earlier.db"
    fill(f"sqlite:///{path}").dispose()
    with closing(sqlite3.connect(path)) as conn, conn:
        for name in schema.BOOKKEEPING_TABLES:
            conn.execute(f"DROP TABLE {name}")
    monkeypatch.setenv("CHOREOSCOPE_STORE", f"sqlite:///{path}")
    monkeypatch.delenv("CHOREOSCOPE_JAEGER_UI", raising=False)
    for page in PAGES:
        at = run(page)
        assert not [e.value for e in at.error if "cannot be read" in e.value], page
    assert run("flows").dataframe[0].value.shape[0] > 0
    assert [e.value for e in run().error] == ["1 outbox source(s) unreachable"]  # as filled


@pytest.fixture
def dead_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store whose one flow is a dead outbox row that never reached the bus, analysed by the
    collector's own pass."""
    from choreoscope.collector.analyze import analyze
    from choreoscope.collector.detect.anomaly import record
    from choreoscope.collector.detect.stuck_outbox import stuck_outbox_anomalies
    from choreoscope.collector.store import Store

    url = f"sqlite:///{tmp_path / 'dead-only.db'}"
    stuck = [{"id": "0190a0a0-0000-7000-8000-000000000009", "seq": 9, "aggregatetype": "orders",
              "aggregateid": "ord_9", "type": "order.placed", "attempts": 5,
              "last_error": "MessageSizeTooLargeError", "age_s": 60.0,
              "created_at": "2023-11-14T22:12:20.000Z", "correlation_id": "ord-9",
              "trace_id": "0af7651916cd43dd8448eb211c80319c", "service": "order-service",
              "status": "dead", "reason": "dead"}]
    store = add(Store(url).create(), {schema.outbox_sources: [
        {"source": "orders-db", "table_name": "outbox", "reachable": True,
         "last_poll_ms": T0, "last_ok_ms": T0, "last_error": None, "pending": 0, "dead": 1,
         "oldest_pending_age_s": None, "publish_lag_p95_ms": None,
         "stuck": json.dumps(stuck)}]})
    with store.engine.begin() as conn:  # as the outbox monitor records it
        record(store, conn, stuck_outbox_anomalies("orders-db", "outbox", stuck), T0)
    analyze(store, now_ms=T0 + 1_000)
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    monkeypatch.setenv("CHOREOSCOPE_JAEGER_UI", "http://127.0.0.1:16686")


@pytest.mark.parametrize("page", PAGES)
def test_a_flow_known_only_from_a_dead_outbox_row_renders_on_every_page(
        dead_only: None, page: str) -> None:
    """No event, no variant: every page still runs; the overview counts the failed flow."""
    at = run(page)
    if page == "overview":
        assert metrics(at)["Failed"] == "1"
    if page == "outbox":
        assert at.dataframe[0].value["flow"].tolist() == ["flows?flow=ord-9"]


def test_the_detail_of_a_flow_known_only_from_a_dead_outbox_row(dead_only: None) -> None:
    """Its detail says it is failed, has no event, names the dead row and links its trace."""
    at = run("flows", flow="ord-9")
    assert [s.value for s in at.subheader] == ["Flow `ord-9`"]
    assert (metrics(at)["Events"], metrics(at)["Anomalies"]) == ("0", "1")
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("No event of this flow reached the bus: it is failed because "
                              "its outbox row is dead.\n\n- `outbox orders-db: row ")
    assert warning.endswith("is dead after 5 attempts; last error: MessageSizeTooLargeError`")
    shown = text_of(at)
    assert "http://127.0.0.1:16686/trace/0af7651916cd43dd8448eb211c80319c" in shown + "".join(
        b.proto.url for b in at.get("link_button"))


def test_no_table_writes_a_missing_value_as_none(env: None) -> None:
    """Missing text in any table (a span's group, an anomaly's subkind, a link there is no
    target for) is an empty cell: Streamlit writes a grey "None" otherwise, which reads as
    a value. Numbers stay numbers."""
    from choreoscope.dashboard.components.fmt import blank_missing

    df = pd.DataFrame({"text": ["a", None, "c"], "link": ["http://x/1", None, ""],
                       "count": [1.0, None, 3.0]})
    shown = blank_missing(df)
    assert shown["text"].tolist() == ["a", "", "c"]
    assert shown["link"].tolist() == ["http://x/1", "", ""]
    assert shown["count"].isna().tolist() == [False, True, False]
    assert df["text"].isna().tolist() == [False, True, False]  # the caller's frame untouched
    for page in PAGES:
        at = run(page)
        for table in at.dataframe:
            value = table.value
            for name in value.columns:
                if not pd.api.types.is_numeric_dtype(value[name]):
                    assert not value[name].isna().any(), (page, name)
    at = run("flows", flow="ord-1")
    for table in at.dataframe:
        for name in table.value.columns:
            if not pd.api.types.is_numeric_dtype(table.value[name]):
                assert not table.value[name].isna().any(), ("flow detail", name)


def test_a_flow_start_names_its_day_unless_it_is_today() -> None:
    """The detail's "Started (UTC)" tile: the time alone for a flow of today, the day too for
    an older one (a time alone read as today's)."""
    from choreoscope.dashboard.components import fmt

    now_ms = 1_795_927_000_000  # 2026-11-29T04:36:40Z
    assert fmt.started("2026-11-29T01:02:03.456Z", now_ms) == "01:02:03"
    assert fmt.started("2026-11-28T23:59:59.000Z", now_ms) == "Nov 28 23:59:59"
    assert fmt.started("", now_ms) == ""


def test_a_trace_of_several_flows_links_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a trace id in which one request started two flows shows the first seen and
    links the other, as `choreoscope flow` names it."""
    from tests.collector.query._data import T0, event

    shared = "5" * 32
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = fill(url)
    with store.engine.begin() as conn:
        conn.execute(schema.events.insert(), [
            event("orders", 10, "n1", "order.placed", "orders", "ord-n", at=T0, trace=shared),
            event("orders", 11, "f1", "order.placed", "orders", "ord-f", at=T0 + 1,
                  trace=shared)])
    store.dispose()
    monkeypatch.setenv("CHOREOSCOPE_STORE", url)
    at = run("flows", flow=shared)
    assert [s.value for s in at.subheader] == ["Flow `ord-n`"]
    assert f"Trace `{shared}` holds 2 flows: this one, published first, and " \
           "[`ord-f`](flows?flow=ord-f)." in [c.value for c in at.caption]
