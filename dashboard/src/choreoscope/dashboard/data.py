"""Cached reads of the store, through the collector's query layer only.

Each function is keyed by the store URL and its filters and cached for a few seconds, so a
page's live refresh and several browser tabs share one query. The store is opened read-only.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from choreoscope.collector import query
from choreoscope.collector.query import dashboard as q
from choreoscope.collector.query.intervals import Intervals
from choreoscope.collector.query.intervals import configured as configured_intervals
from choreoscope.collector.query.intervals import recorded as recorded_intervals

from . import settings

TTL_S = 3


def url() -> str:
    return settings.load().store_url


@st.cache_resource(show_spinner=False)
def _store(store_url: str) -> Any:
    return q.open_readonly(store_url)


def store() -> Any:
    return _store(url())


def now_ms() -> int:
    return int(time.time() * 1000)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def state(store_url: str) -> dict[str, Any]:
    """`{state: ok|empty|missing|unreachable, detail}`: whether there is anything to show
    (an event, or an outbox source polled).
    A database holding someone else's tables is unreachable, its detail the collector's
    complaint (`has_tables`)."""
    path = q.sqlite_path(store_url)
    try:
        s = _store(store_url)
    except FileNotFoundError:
        return {"state": "missing", "detail": path}
    except Exception as exc:  # noqa: BLE001 - shown to the user, credentials masked
        return {"state": "unreachable", "detail": q.mask_secrets(str(exc))}
    try:
        if not q.has_tables(s):
            return {"state": "empty", "detail": "no Choreoscope tables yet"}
        with s.engine.connect() as conn:
            from sqlalchemy import text

            # An outbox watched before any event reached the bus (the relay never got
            # through, or the collector only watches outboxes) is something to show.
            anything = conn.execute(text(
                "SELECT 1 FROM events UNION ALL SELECT 1 FROM outbox_sources LIMIT 1")).first()
    except Exception as exc:  # noqa: BLE001
        return {"state": "unreachable",
                "detail": q.read_failure(store_url, q.mask_secrets(str(exc)))}
    return {"state": "ok" if anything else "empty", "detail": None}


@st.cache_data(ttl=TTL_S, show_spinner=False)
def overview(store_url: str, window_ms: int = 3_600_000) -> dict[str, Any]:
    """The overview's numbers; anomalies per minute over the `window_ms` up to `now_ms`
    (from `anomalies_since_ms`)."""
    s, now = _store(store_url), now_ms()
    result = q.overview(s, now_ms=now, window_ms=window_ms)
    result["flows_by_status"] = query.count_flows_by_status(s)
    result["now_ms"], result["anomalies_since_ms"] = now, now - window_ms
    result["anomalies_per_minute"] = q.anomalies_per_minute(s, since_ms=now - window_ms)
    return result


@st.cache_data(ttl=TTL_S, show_spinner=False)
def search_flows(store_url: str, *, offset: int = 0, limit: int = 50,
                 window_s: int | None = None, **filters: Any) -> dict[str, Any]:
    clean = {k: v for k, v in filters.items() if v not in (None, "")}
    if window_s is not None:
        clean["since_ms"] = now_ms() - window_s * 1000
    return query.search_flows(_store(store_url), offset=offset, limit=limit, **clean)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def flow(store_url: str, some_id: str) -> dict[str, Any] | None:
    """The flow of a correlation id, else of the event or trace with that id, as
    `choreoscope flow ID` finds it (`resolve_flow_id`); None when nothing matches."""
    s = _store(store_url)
    correlation_id = query.resolve_flow_id(s, some_id)
    detail = None if correlation_id is None else query.get_flow(s, correlation_id)
    if correlation_id is None or detail is None:
        return None
    headers = q.flow_headers(s, correlation_id)
    for e in detail["events"]:
        e["headers"] = headers.get(f"{e['topic']}/{e['partition']}/{e['offset']}", {})
    detail["anomalies"] = q.flow_anomalies(s, correlation_id)
    return detail


@st.cache_data(ttl=TTL_S, show_spinner=False)
def flows_of_trace(store_url: str, some_id: str) -> list[str]:
    """The flows sent in trace `some_id`, the first published first ([] for an id of no
    trace)."""
    from choreoscope.collector.query.flows import flows_of_trace as of_trace

    return of_trace(_store(store_url), some_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def outbox_rows_of(store_url: str, some_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(source, row) of the stuck or dead outbox rows whose row, correlation or trace id is
    `some_id`: why an id names no flow (its event never reached the bus)."""
    from choreoscope.collector.query.outbox import stuck_outbox_rows

    return stuck_outbox_rows(_store(store_url), some_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def graph_dot(store_url: str, window_s: int | None) -> tuple[str, dict[str, Any]]:
    """The flow map: the collector's learned graph (or the last `window_s` of traffic) and
    its DOT, drawn by the same function as `choreoscope graph --dot`."""
    s = _store(store_url)
    g = query.graph(s) if window_s is None else q.graph_window(
        s, since_ms=now_ms() - window_s * 1000)
    return query.graph_dot(g), g


@st.cache_data(ttl=TTL_S, show_spinner=False)
def out_of_order(store_url: str, *, subkind: str | None = None, group: str | None = None,
                 subject: str | None = None, limit: int = 100,
                 offset: int = 0) -> dict[str, Any]:
    """One page of out-of-order arrivals, their groups and their count over time, all three
    filtered alike; `filtered` tells whether any filter is set."""
    s = _store(store_url)
    subkind, group, subject = subkind or None, group or None, subject or None
    page = q.out_of_order(s, subkind=subkind, group=group, subject=subject, limit=limit,
                          offset=offset)
    page["groups"] = q.out_of_order_groups(s, subkind=subkind, group=group, subject=subject)
    page["over_time"] = q.anomalies_over_time(s, kind="out_of_order", subkind=subkind,
                                              group=group, subject=subject)
    page["filtered"] = any((subkind, group, subject))
    return page


@st.cache_data(ttl=TTL_S, show_spinner=False)
def out_of_order_rows(store_url: str, ids: tuple[int, ...], *, subkind: str | None = None,
                      group: str | None = None, subject: str | None = None
                      ) -> list[dict[str, Any]]:
    """The out-of-order arrivals of these anomaly ids that match the filters, newest first."""
    return q.out_of_order(_store(store_url), subkind=subkind or None, group=group or None,
                          subject=subject or None, limit=len(ids), ids=list(ids))["rows"]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def outbox(store_url: str) -> list[dict[str, Any]]:
    """The outbox sources; each stuck row says whether its flow exists (`has_flow`)."""
    s = _store(store_url)
    sources = query.outbox_status(s)
    flows = q.existing_flows(s, [r.get("correlation_id") for src in sources
                                 for r in src["stuck"]])
    for source in sources:  # errors may quote a database URL: never show its password
        source["last_error"] = q.mask_secrets(source.get("last_error"))
        for row in source["stuck"]:
            row["last_error"] = q.mask_secrets(row.get("last_error"))
            row["has_flow"] = row.get("correlation_id") in flows
    return sources


@st.cache_data(ttl=TTL_S, show_spinner=False)
def intervals(store_url: str) -> Intervals:
    """How often the collector renews the outbox, lag and analysis figures, as it recorded
    them in the store; the dashboard's own settings when the store cannot say."""
    try:
        with _store(store_url).engine.connect() as conn:
            return recorded_intervals(conn)
    except Exception:  # noqa: BLE001 - an unreadable store shows its own error elsewhere
        return configured_intervals()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def consumer_lag(store_url: str) -> list[dict[str, Any]]:
    return q.consumer_lag(_store(store_url))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def variants(store_url: str) -> dict[str, Any]:
    return q.variants(_store(store_url))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def event_health(store_url: str, window_s: int | None) -> dict[str, Any]:
    since = None if window_s is None else now_ms() - window_s * 1000
    return q.event_health(_store(store_url), since_ms=since)
