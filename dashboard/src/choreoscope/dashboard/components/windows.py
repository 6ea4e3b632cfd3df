"""The time-window choice shared by the pages (`?window=1h`)."""

from __future__ import annotations

WINDOWS: dict[str, int | None] = {
    "all": None,
    "15m": 15 * 60,
    "1h": 3600,
    "24h": 24 * 3600,
    "7d": 7 * 24 * 3600,
}
LABELS = {"all": "all time", "15m": "last 15 minutes", "1h": "last hour",
          "24h": "last 24 hours", "7d": "last 7 days"}


def label(name: str) -> str:
    return LABELS.get(name, name)
