"""Links from a table row to its flow's detail on the Flows page.

The link is relative (`flows?flow=ID`), so it opens beside the page it is on, under any
`--server.baseUrlPath`; the id is URL-encoded whole, and the column shows it decoded.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import streamlit as st


def href(correlation_id: str) -> str:
    """`flows?flow=ID`, every character of the id that is not a letter, digit or `_.-~`
    percent-encoded (a space, `/`, `&`, `#`, `?`, `%` ...)."""
    return "flows?flow=" + quote(correlation_id, safe="")


def column(label: str) -> Any:  # st.column_config.LinkColumn: a function
    """A dataframe column config showing each `href` as its correlation id."""
    return st.column_config.LinkColumn(label, display_text=r"^flows\?flow=(.*)$")
