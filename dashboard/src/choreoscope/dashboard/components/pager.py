"""Paging of a long list: a page box under it, its page clamped to the pages that exist.

The page chosen is kept in the session (`{page}:page`) while the filters change; when a filter
leaves fewer pages than the one chosen, the list shows its last page and the box moves there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st


def fetch(page: str, size: int, query: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """`query(offset)` (a result with its `total`) for the page chosen, or for the last page
    when the chosen one is past it."""
    key = f"{page}:page"
    chosen = max(1, int(st.session_state.get(key, 1)))
    result = query((chosen - 1) * size)
    last = pages(result["total"], size)
    if chosen > last:
        st.session_state[key] = last
        result = query((last - 1) * size)
    return result


def pages(total: int, size: int) -> int:
    return max(1, -(-total // size))


def control(page: str, total: int, size: int) -> None:
    """The page box, when there is more than one page."""
    count = pages(total, size)
    if count > 1:
        st.number_input(f"Page (of {count:,})", min_value=1, max_value=count,
                        key=f"{page}:page", width=160)
