"""Texts both stores accept: valid UTF-8 without NUL characters."""

from __future__ import annotations

import hashlib
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


# Of an identifier cut to its column: hex digits of the hash that follows its start, and
# the characters that `#` and the hash take.
_ID_HASH_CHARS = 32
ID_SUFFIX_CHARS = 1 + _ID_HASH_CHARS


def cut_id(value: str, limit: int) -> str:
    """An identifier longer than `limit` characters cut to `limit`: its start, `#` and a hash
    of the whole, so two long ids sharing a start stay two (a plain cut made their events
    one flow). The same id is cut the same way wherever it is met (correlation id, causation
    id naming an event id, a lookup), so they still match. Shorter ids are returned as they
    are."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{value[:limit - ID_SUFFIX_CHARS]}#{digest[:_ID_HASH_CHARS]}"
