"""Flows: search and filter every workflow instance; choose one to see it in detail."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from choreoscope.dashboard import data
from choreoscope.dashboard.components import (
    flow_detail,
    flow_links,
    fmt,
    jaeger,
    pager,
    params,
    refresh,
    shell,
    windows,
)

PAGE = "flows"
STATUSES = ["", "in_progress", "completed", "stuck", "failed"]
ANOMALY_KINDS = ["", "out_of_order", "duplicate", "orphan", "stuck_flow", "failed_handler",
                 "envelope", "untraced", "stuck_outbox"]
PAGE_SIZE = 50
_CHANGED = f"{PAGE}:flow_changed"


def render() -> None:
    if not shell.start("Flows"):
        return
    f = _filters()
    chosen = (st.session_state.get(f"{PAGE}:flow") or "").strip()  # as pasted, maybe padded
    if chosen:  # a flow opened by a link: its detail is below the table, maybe out of sight
        _banner(chosen)
    refresh.live(_table, f)
    if chosen:
        refresh.live(_detail, chosen)


def _filters() -> dict[str, Any]:
    top = st.columns([2, 1, 1, 1])
    with top[0]:
        params.bind("flow", st.text_input, default="", page=PAGE, label="Open flow",
                    placeholder="correlation id, event id or trace id",
                    help="Shows this flow's detail below: the flow of this correlation id, "
                         "or of the event or trace with this id.")
    with top[1]:
        status = params.bind("status", st.selectbox, default="", page=PAGE, options=STATUSES,
                             label="Status", format_func=lambda s: s.replace("_", " ") or "any")
    with top[2]:
        window = params.bind("window", st.selectbox, default="all", page=PAGE,
                             options=list(windows.WINDOWS), format_func=windows.label,
                             label="Active in")
    with top[3]:
        anomaly = params.bind("anomaly", st.selectbox, default="", page=PAGE,
                              options=ANOMALY_KINDS, label="With anomaly",
                              format_func=lambda s: s.replace("_", " ") or "any")
    row = st.columns(4)
    with row[0]:
        cid = params.bind("q", st.text_input, default="", page=PAGE, label="Correlation id contains")
    with row[1]:
        etype = params.bind("type", st.text_input, default="", page=PAGE, label="Event type",
                            placeholder="order.placed")
    with row[2]:
        service = params.bind("service", st.text_input, default="", page=PAGE, label="Service")
    with row[3]:
        subject = params.bind("subject", st.text_input, default="", page=PAGE, label="Subject")
    return {"status": status, "anomaly_kind": anomaly, "correlation_id": cid.strip(),
            "event_type": etype.strip(), "service": service.strip(), "subject": subject.strip(),
            "window_s": windows.WINDOWS[window]}


def _choose(key: str, rows: list[str]) -> None:
    selection = st.session_state.get(key, {}).get("selection", {}).get("rows", [])
    if selection and selection[0] < len(rows):
        params.set_widget("flow", PAGE, rows[selection[0]])
        st.session_state[_CHANGED] = True


def _table(f: dict[str, Any]) -> None:
    result = pager.fetch(PAGE, PAGE_SIZE, lambda offset: data.search_flows(
        data.url(), offset=offset, limit=PAGE_SIZE, **f))
    total = result["total"]
    if not result["flows"]:
        st.info("No flow matches these filters.")
        return
    df = pd.DataFrame(result["flows"])
    df["started"] = df["started_at"].str.replace("T", " ").str.slice(0, 19)
    df["services"] = df["services"].map(", ".join)
    config: dict[str, Any] = {
        "correlation_id": st.column_config.TextColumn("correlation id"),
        "event_count": st.column_config.NumberColumn("events"),
        "anomaly_count": st.column_config.NumberColumn("anomalies"),
        "duration_ms": st.column_config.NumberColumn("duration (ms)"),
        "started": st.column_config.TextColumn("started (UTC)"),
    }
    cols = ["correlation_id", "status", "started", "duration_ms", "event_count", "services",
            "variant", "anomaly_count"]
    if jaeger.enabled():
        # no link where the producers' samplers recorded none of the flow's traces
        df["jaeger"] = [jaeger.trace_url(t[0]) if t and status != "unsampled" else None
                        for t, status in zip(df["trace_ids"], df["trace_status"], strict=True)]
        cols.append("jaeger")
        config["jaeger"] = jaeger.link_column()
    ids = df["correlation_id"].tolist()
    st.caption(f"{total:,} flows match · newest activity first · select a row for its detail")
    chosen = (st.session_state.get(f"{PAGE}:flow") or "").strip()
    # The browser keeps a selection as a row position: a table keyed by its rows starts
    # afresh when they change (a refresh, a filter, another page), highlighting the flow
    # shown below if it is among them, never whatever flow took its place.
    key = f"{PAGE}:table:{hashlib.sha256(chr(0).join(ids).encode()).hexdigest()[:16]}"
    st.dataframe(fmt.blank_missing(df[cols]), hide_index=True, width="stretch",
                 column_config=config,
                 key=key, on_select=lambda: _choose(key, ids),
                 selection_mode="single-row",
                 selection_default={"selection": {"rows": [ids.index(chosen)]}}
                 if chosen in ids else None)
    if st.session_state.pop(_CHANGED, False):
        st.rerun(scope="app")  # the detail below lives outside this fragment
    pager.control(PAGE, total, PAGE_SIZE)


def _banner(some_id: str) -> None:
    """A link down to the detail, naming the flow shown: an event or trace id opens the flow
    it belongs to, which has another id. Nothing when no flow matches (the detail says so)."""
    try:
        flow = data.flow(data.url(), some_id)
    except Exception:  # noqa: BLE001 - the detail below reports what the store said
        flow = None
    if flow is None:
        return
    cid = flow["correlation_id"]
    what = fmt.md(cid) if cid == some_id else f"{fmt.md(cid)} (of {fmt.md(some_id)})"
    st.markdown(f":material/arrow_downward: [Flow {what} is shown below the "
                f"table](#{flow_detail.ANCHOR})")
    others = [f for f in data.flows_of_trace(data.url(), some_id) if f != cid]
    if others and cid != some_id:
        st.caption(f"Trace {fmt.md(some_id)} holds {len(others) + 1} flows: this one, "
                   "published first, and " + ", ".join(f"[{fmt.md(f)}]({flow_links.href(f)})"
                                             for f in others) + ".")


def _detail(some_id: str) -> None:
    flow = data.flow(data.url(), some_id)
    st.divider()
    if flow is None:
        held = [f"Outbox {fmt.md(source)} holds its {row.get('status') or 'stuck'} row "
                f"{fmt.md(str(row.get('id')))} ({fmt.md(str(row.get('type')))}, "
                f"{row.get('attempts')} attempts): its event never reached the bus "
                "(the Outbox page shows it)." for source, row in data.outbox_rows_of(
                    data.url(), some_id)]
        st.warning("\n\n".join([f"No flow with correlation id, event id or trace id "
                                 f"{fmt.md(some_id)} in the store.", *held]))
        return
    flow_detail.render(flow)


if __name__ == "__main__":
    render()
