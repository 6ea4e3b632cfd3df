"""Out-of-order: what each consumer group processed (or the bus carried) before its time."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from choreoscope.dashboard import data
from choreoscope.dashboard.components import fmt, jaeger, pager, params, refresh, shell
from choreoscope.dashboard.components.time_axis import bucket_x

PAGE = "out_of_order"
SUBKINDS = ["", "causal", "sequence", "time"]
EXPLAIN = {
    "causal": "an effect was handled (or published) before the event that caused it",
    "sequence": "a lower `ce_sequence` was handled after a higher one of the same source "
                "and subject",
    "time": "an older `ce_time` was handled after a newer one of the same subject "
            "(beyond the allowed clock skew)",
}
PAGE_SIZE = 10
BUCKET_NAMES = {60_000: "minute", 300_000: "5 minutes", 900_000: "15 minutes",
                3_600_000: "hour", 21_600_000: "6 hours", 86_400_000: "day"}


def render() -> None:
    if not shell.start("Out-of-order arrivals"):
        return
    st.caption("Each row names the event that arrived late and shows the order it should have "
               "had next to the order in which it was observed.")
    c = st.columns(3)
    with c[0]:
        subkind = params.bind("subkind", st.selectbox, default="", page=PAGE, options=SUBKINDS,
                              label="Kind", format_func=lambda s: s or "any")
    with c[1]:
        group = params.bind("group", st.text_input, default="", page=PAGE,
                            label="Consumer group")
    with c[2]:
        subject = params.bind("subject", st.text_input, default="", page=PAGE, label="Subject")
    refresh.live(_body, subkind, group.strip(), subject.strip())


def _body(subkind: str, group: str, subject: str) -> None:
    result = pager.fetch(PAGE, PAGE_SIZE, lambda offset: data.out_of_order(
        data.url(), subkind=subkind, group=group, subject=subject, limit=PAGE_SIZE,
        offset=offset))
    if not result["groups"] and not result["filtered"]:
        st.success("No out-of-order arrivals detected.")
        return
    if result["groups"]:
        left, right = st.columns([3, 2])
        with left:
            st.markdown("**By consumer group and subject** (most frequent 100)")
            g = pd.DataFrame(result["groups"])
            g["group"] = g["group"].fillna("(on the bus)")
            g["last detected"] = g["last_detected_ms"].map(fmt.when)
            st.dataframe(fmt.blank_missing(g[["group", "subkind", "subject", "count", "last detected"]]),
                         hide_index=True, width="stretch")
        with right:
            _over_time(result["over_time"])
    total = result["total"]
    # Arrivals opened and since pushed off this page by newer ones stay where they were read.
    shown = {row["id"] for row in result["rows"]}
    opened = tuple(sorted(i for i in _opened() if i not in shown))
    pinned = data.out_of_order_rows(data.url(), opened, subkind=subkind, group=group,
                                    subject=subject) if opened else []
    if pinned:
        st.markdown(f"**Opened** ({len(pinned)}, no longer on this page)")
        for row in pinned:
            _explain(row)
    st.markdown(f"**{total:,} arrival{'' if total == 1 else 's'}** match the filters")
    for row in result["rows"]:
        _explain(row)
    pager.control(PAGE, total, PAGE_SIZE)


def _opened() -> list[int]:
    """The anomaly ids whose explanation is open (their expanders' keys)."""
    prefix = f"{PAGE}:open:"
    out = []
    for key, value in st.session_state.items():
        if isinstance(key, str) and key.startswith(prefix) and value is True:
            try:
                out.append(int(key[len(prefix):]))
            except ValueError:
                continue
    return out


def _over_time(over: dict[str, Any]) -> None:
    """Detections per bucket, on an axis from one bucket before the first to one after the
    last."""
    bucket = over["bucket_ms"]
    st.markdown(f"**Over time** (detections per {BUCKET_NAMES.get(bucket, '')})")
    per = pd.DataFrame(over["rows"])
    if per.empty:
        return
    per["minute"] = fmt.ts(per["at_ms"])
    per["at"] = per["at_ms"].map(fmt.when)  # tooltip, in UTC
    st.altair_chart(alt.Chart(per).mark_bar(color="#f59e0b").encode(
        x=bucket_x("minute", int(per["at_ms"].min()) - bucket,
                   int(per["at_ms"].max()) + 2 * bucket, bucket,
                   "%H:%M" if bucket < 3_600_000 else "%b %d %H:%M"),
        y=alt.Y("count:Q", title="arrivals", axis=alt.Axis(tickMinStep=1, format="d")),
        tooltip=[alt.Tooltip("at:N", title="from"), "count:Q"]).properties(height=220))


def order_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per event of an expected/observed order, with its times."""
    rows = []
    for i, r in enumerate(records, start=1):
        processed = r.get("processed_at_us")
        rows.append({
            "#": i,
            "type": r.get("type"),
            "event id": r.get("event_id"),
            # text: a number column shows a missing one as a grey "None"
            "sequence": "" if r.get("sequence") is None else str(r["sequence"]),
            "event time": fmt.clock(r.get("time_ms")) if r.get("time_ms") else r.get("time"),
            "on the bus": fmt.clock(r.get("broker_ts_ms")),
            "processed": fmt.clock_us(processed),
            "position": (f"{r['topic']}/{r['partition']}/{r['offset']}"
                         if r.get("topic") is not None else "—"),
        })
    df = pd.DataFrame(rows)
    return df.drop(columns=[c for c in ("sequence",) if df.get(c) is not None
                            and (df[c] == "").all()])


def expander_title(row: dict[str, Any]) -> str:
    """`subkind · type id late at group G · subject S`, leaving out what the row lacks."""
    extra = row["extra"] or {}
    where = f"group {fmt.md(row['group'])}" if row["group"] else "the bus"
    late = " ".join(part for part in (fmt.md(extra.get("type") or ""),
                                      fmt.md((row["event_id"] or "")[:18])) if part)
    return (f"{row['subkind'] or 'out of order'} · {late or 'an event'} late at {where}"
            + (f" · subject {fmt.md(row['subject'])}" if row["subject"] else ""))


def _explain(row: dict[str, Any]) -> None:
    extra = row["extra"] or {}
    # Keyed by the anomaly, so one left open stays open while refreshes move it down the list.
    with st.expander(expander_title(row), key=f"{PAGE}:open:{row['id']}", on_change="rerun"):
        st.markdown(f"{fmt.md(row['detail'])}  \n_{EXPLAIN.get(row['subkind'] or '', '')}_")
        expected, observed = extra.get("expected"), extra.get("observed")
        if expected and observed:
            day = next((fmt.when(r.get("broker_ts_ms") or r.get("time_ms"))[:10]
                        for r in expected if r.get("broker_ts_ms") or r.get("time_ms")), "")
            st.markdown(f"**Expected order** (times UTC, {day})")
            st.dataframe(fmt.blank_missing(order_table(expected)), hide_index=True, width="stretch")
            st.markdown("**Observed order**")
            st.dataframe(fmt.blank_missing(order_table(observed)), hide_index=True, width="stretch")
        elif extra:
            st.json(extra, expanded=1)
        if row["correlation_id"]:
            st.page_link("views/flows.py", label=f"Flow {fmt.md(row['correlation_id'])}",
                         icon=":material/arrow_forward:",
                         query_params={"flow": row["correlation_id"]})
        if row.get("trace_id"):  # the late event's trace
            jaeger.buttons([row["trace_id"]])
        st.caption(f"Detected {fmt.when(row['detected_at_ms'])}")


if __name__ == "__main__":
    render()
