"""Live refresh: the data parts of a page rerun every few seconds, filters untouched.

The sidebar control (default from `--refresh`, 5 s) can change the interval or pause it. The
choice stays the same on every page of the session. A change is written to the URL as
`?refresh=SECONDS` (0 = paused), and a URL holding one sets it; other pages do not write it
again: each write is an entry in the browser's history, and one made as a page opened put a
second entry behind every page change, so Back landed on the page without its filters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from choreoscope.collector.store.masking import mask_secrets

from .. import settings
from . import fmt

CHOICES = (0.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_CHOICE = "_cs_refresh"  # (seconds, paused): the choice, kept for the whole session
_SEEN = "_cs_refresh_seen"  # the `refresh` parameter as last seen or written, None if left out
_CHANGED = "_cs_refresh_changed"  # the user changed the choice: write it to the URL
_KEY = "_cs_refresh_s"
_PAUSE = "_cs_refresh_paused"


def control() -> None:
    """The sidebar widgets: interval and pause. Call once per run, from each page."""
    default = settings.load().refresh_s
    choices = sorted(set(CHOICES) | {default})
    raw = st.query_params.get("refresh")
    # The URL holding a parameter it did not hold on the last run (a link, the browser's
    # Back) sets the choice; none keeps the session's.
    if _CHOICE not in st.session_state or (
            raw is not None and raw != st.session_state.get(_SEEN)):
        st.session_state[_CHOICE] = _from_url(raw, default, choices)
    seconds, paused = st.session_state[_CHOICE]
    # Every page draws its own widgets, which Streamlit treats as new ones (back at their
    # defaults) after a page change: they are set from the kept choice on every run.
    st.session_state[_KEY] = seconds
    st.session_state[_PAUSE] = paused
    with st.sidebar:
        cols = st.columns([3, 2], vertical_alignment="bottom")
        cols[0].selectbox(
            "Auto-refresh", choices, key=_KEY, on_change=_keep,
            format_func=lambda s: "off" if s == 0 else f"every {s:g} s",
            help="How often the data on the page is reloaded; filters stay as they are.")
        cols[1].toggle("Pause", key=_PAUSE, on_change=_keep, disabled=seconds == 0)
    if st.session_state.pop(_CHANGED, False):
        value = 0.0 if paused else float(seconds)
        raw = None if value == default else f"{value:g}"
        if raw is None:
            st.query_params.pop("refresh", None)
        elif st.query_params.get("refresh") != raw:
            st.query_params["refresh"] = raw
    st.session_state[_SEEN] = raw


def _from_url(raw: str | None, default: float, choices: list[float]) -> tuple[float, bool]:
    """(seconds, paused) from a `refresh` parameter: 0 is paused, anything unknown the
    default."""
    try:
        wanted = float(raw) if raw is not None else default
    except ValueError:
        wanted = default
    return (wanted if wanted in choices else default), wanted == 0


def _keep() -> None:
    """On a change of either widget: keep the new choice for the pages to come."""
    st.session_state[_CHOICE] = (float(st.session_state[_KEY]), bool(st.session_state[_PAUSE]))
    st.session_state[_CHANGED] = True


def interval() -> timedelta | None:
    """The current refresh interval, None when paused or off."""
    seconds, paused = st.session_state.get(_CHOICE, (settings.load().refresh_s, False))
    return timedelta(seconds=seconds) if seconds > 0 and not paused else None


def live(body: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `body(*args, **kwargs)` as a fragment rerunning at the chosen interval. A store
    that stops answering while the page is open is said in its place, once per rerun, until
    it answers again (never a traceback)."""
    @functools.wraps(body)  # the same name: the fragment keeps its identity
    def guarded(*a: Any, **kw: Any) -> Any:
        try:
            return body(*a, **kw)
        except (SQLAlchemyError, OSError) as exc:
            _store_down(exc)
            return None

    return st.fragment(guarded, run_every=interval())(*args, **kwargs)


def _store_down(exc: BaseException) -> None:
    detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    every = interval()
    again = (f"this part tries again every {every.total_seconds():g} s" if every
             else "reload the page to try again")
    st.error(f"**The store cannot be read right now:** {fmt.md(mask_secrets(detail))}. "
             f"The figures come back when it answers; {again}.",
             icon=":material/cloud_off:")
