"""Page filters bound to the URL (`st.query_params`), so copying the URL reopens the view.

A bound widget takes its first value from the URL; when the user changes it, the URL follows.
When the URL changes from outside (a link with `?flow=...`, the browser's Back), the widget
follows the URL, back to its default when the parameter is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

_WRITTEN = "_cs_qp_written"


def _written() -> dict[str, str | None]:
    return st.session_state.setdefault(_WRITTEN, {})


def bind(name: str, widget: Callable[..., Any], *, default: Any, page: str,
         parse: Callable[[str], Any] = str, options: list[Any] | None = None,
         **kwargs: Any) -> Any:
    """Render `widget(key=..., **kwargs)` with its value bound to query parameter `name`."""
    key = f"{page}:{name}"
    raw = st.query_params.get(name)
    written = _written().get(key)
    # The URL is the truth: one that no longer holds what we last wrote (the browser's Back,
    # a link) sets the widget, to the default when the parameter is gone.
    if key not in st.session_state or raw != written:
        value = default
        if raw is not None:
            value = _from_url(name, raw, default, parse, options)
        st.session_state[key] = value
    if options is not None:
        kwargs["options"] = options
    value = widget(key=key, **kwargs)
    set_param(name, None if value == default or value in (None, "") else str(value), key=key)
    return value


def _from_url(name: str, raw: str, default: Any, parse: Callable[[str], Any],
              options: list[Any] | None) -> Any:
    """The value `raw` gives the filter; the default, with a warning saying so, when it gives
    none (a mistyped link would otherwise show unfiltered data as if it were filtered). An
    option named in another letter case (`STUCK`) is that option."""
    try:
        value = parse(raw)
    except (TypeError, ValueError):
        value = _REFUSED
    if options is not None and value not in options:
        same = [o for o in options if isinstance(o, str) and isinstance(value, str)
                and o.lower() == value.lower()]
        value = same[0] if same else _REFUSED
    if value is _REFUSED:
        expected = ("" if options is None or len(options) > 12 else
                    " (expected one of " + ", ".join(f"`{o}`" for o in options if o != "") + ")")
        st.warning(f"The address's `{name}={raw[:80]}` names no such filter{expected}: "
                   "it is left out.", icon=":material/link_off:")
        return default
    return value


_REFUSED = object()


def set_param(name: str, value: str | None, *, key: str | None = None) -> None:
    """Write (or, with None, remove) one query parameter."""
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value
    _written()[key or name] = value


def set_widget(name: str, page: str, value: Any) -> None:
    """From a callback: change a bound widget's value and the URL with it."""
    key = f"{page}:{name}"
    st.session_state[key] = value
    set_param(name, None if value in (None, "") else str(value), key=key)
