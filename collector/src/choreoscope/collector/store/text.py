"""Texts both stores accept: valid UTF-8 without NUL characters."""

from __future__ import annotations

import re
from typing import Any

_SURROGATES = re.compile("[\ud800-\udfff]")


def without_surrogates(value: str) -> str:
    """The text with lone surrogates (legal as JSON escapes, not encodable as UTF-8: refused
    by both stores) as U+FFFD."""
    return value if value.isascii() else _SURROGATES.sub("\ufffd", value)


def clean_text(value: str) -> str:
    """The text with lone surrogates and NUL characters (refused by PostgreSQL) as U+FFFD."""
    value = without_surrogates(value)
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def clean_texts(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of the row with every text value passed through `clean_text`."""
    return {name: clean_text(value) if isinstance(value, str) else value
            for name, value in row.items()}
