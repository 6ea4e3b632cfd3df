"""Variants: the distinct paths flows take, how common each is, and how long it lasts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from choreoscope.dashboard import data
from choreoscope.dashboard.components import flow_links, fmt, params, refresh, shell

PAGE = "variants"
RARE_SHARE = 0.05


def render() -> None:
    if not shell.start("Variants"):
        return
    st.caption("A variant is the sequence of event types of a flow, in causal order; events "
               "of parallel branches come by type, so flows of one causal shape share a "
               f"variant however their branches interleaved. Variants taken by fewer than {RARE_SHARE:.0%} of flows are highlighted as rare.")
    refresh.live(_body)


def _body() -> None:
    v = data.variants(data.url())
    if not v["variants"]:
        st.info("No flows reconstructed yet.")
        return
    df = pd.DataFrame(v["variants"])
    df["share %"] = (df["share"] * 100).round(1)  # as shown: rare or not by that figure
    df["rare"] = df["share %"] < RARE_SHARE * 100
    for c in ("p50_ms", "p95_ms", "max_ms"):
        df[c.replace("_ms", "")] = df[c].map(fmt.duration)
    shown = df[["variant", "count", "share %", "p50", "p95", "max", "rare"]]
    st.markdown(f"**{len(df):,} variants** over {v['total_flows']:,} flows")
    eventless = v.get("flows_without_events", 0)
    if eventless:
        st.caption(f"Not counted: {eventless:,} flow{'s' if eventless != 1 else ''} known "
                   "only from dead outbox rows, with no event on the bus, hence no variant "
                   "(the Outbox page lists them).")
    st.dataframe(
        shown.style.apply(lambda r: ["background-color: #fef3c7" if r["rare"] else ""] * len(r),
                          axis=1),
        hide_index=True, width="stretch",
        column_config={"share %": st.column_config.ProgressColumn(
            "share", format="%.1f%%", min_value=0, max_value=100),
            "rare": st.column_config.CheckboxColumn("rare")})
    choices = df["variant"].tolist()
    chosen = params.bind("variant", st.selectbox, default=choices[0], page=PAGE,
                         options=choices, label="Flows of variant")
    flows = data.search_flows(data.url(), variant=chosen, limit=50)
    if flows["flows"]:
        f = pd.DataFrame(flows["flows"])
        f["flow"] = f["correlation_id"].map(flow_links.href)
        f["started"] = f["started_at"].str.replace("T", " ").str.slice(0, 19)
        st.caption(f"{flows['total']:,} flows, newest 50 shown")
        st.dataframe(fmt.blank_missing(f[["flow", "status", "started", "duration_ms", "event_count"]]),
                     hide_index=True, width="stretch",
                     column_config={"flow": flow_links.column("correlation id"),
                         "duration_ms": st.column_config.NumberColumn("duration (ms)"),
                         "started": st.column_config.TextColumn("started (UTC)"),
                         "event_count": st.column_config.NumberColumn("events")})


if __name__ == "__main__":
    render()
