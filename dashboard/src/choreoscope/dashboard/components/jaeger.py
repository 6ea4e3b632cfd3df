"""Links into the Jaeger UI, shown only when `--jaeger-ui` was given."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import streamlit as st

from .. import settings


def trace_url(trace_id: str | None) -> str | None:
    """`{jaeger_ui}/trace/{id}`, or None without a Jaeger UI or trace id."""
    base = settings.load().jaeger_ui
    if not base or not trace_id:
        return None
    return f"{base}/trace/{quote(str(trace_id), safe='')}"


def enabled() -> bool:
    return settings.load().jaeger_ui is not None


def link_column(label: str = "Jaeger") -> Any:  # st.column_config.LinkColumn: a function
    """A dataframe column config showing trace URLs as "Open in Jaeger"."""
    return st.column_config.LinkColumn(label, display_text="Open in Jaeger", width="small")


def buttons(trace_ids: list[str]) -> None:
    """One "Open in Jaeger" button per trace id (nothing without a Jaeger UI)."""
    urls = [(t, u) for t in trace_ids if (u := trace_url(t))]
    if not urls:
        return
    row = st.container(horizontal=True)
    for trace_id, url in urls:
        row.link_button(f"Open in Jaeger · trace {trace_id[:12]}…", url,
                        icon=":material/open_in_new:", help=trace_id)
