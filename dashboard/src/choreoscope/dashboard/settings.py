"""The dashboard's settings, each declared once; `choreoscope dashboard` passes them by env."""

from __future__ import annotations

import os
from dataclasses import dataclass

STORE_ENV = "CHOREOSCOPE_STORE"
JAEGER_UI_ENV = "CHOREOSCOPE_JAEGER_UI"
REFRESH_ENV = "CHOREOSCOPE_REFRESH_S"
DEFAULT_STORE = "sqlite:///choreoscope.db"
DEFAULT_REFRESH_S = 5.0


@dataclass(frozen=True)
class Settings:
    store_url: str
    jaeger_ui: str | None  # base URL of the Jaeger UI; None hides every Jaeger link
    refresh_s: float  # default auto-refresh interval of the data parts


def load() -> Settings:
    """Settings from the environment (set by `choreoscope dashboard`), else the defaults."""
    jaeger = os.environ.get(JAEGER_UI_ENV, "").strip().rstrip("/") or None
    raw = os.environ.get(REFRESH_ENV, "")
    try:
        refresh = float(raw) if raw else DEFAULT_REFRESH_S
    except ValueError:
        refresh = DEFAULT_REFRESH_S
    return Settings(store_url=os.environ.get(STORE_ENV, "") or DEFAULT_STORE,
                    jaeger_ui=jaeger, refresh_s=refresh)

