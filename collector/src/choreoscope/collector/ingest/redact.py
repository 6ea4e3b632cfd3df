"""Redact sensitive fields and cap the size of the data before it reaches the store.

`Redactor(pattern, max_bytes)` replaces the value of every key matching `pattern`
(case-insensitive, searched anywhere in the key, at any depth, in dicts inside lists too) by
"[REDACTED]", and turns data whose JSON is larger than `max_bytes` into a truncation marker
`{"_truncated": true, "size": N, "preview": "..."}` whose preview is cut from the redacted
JSON, so a redacted value never reaches the store.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

DEFAULT_PATTERN = r"email|phone|card|password|token|secret"
REDACTED = "[REDACTED]"
DEFAULT_MAX_BYTES = 64 * 1024
PREVIEW_CHARS = 1024

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class Redactor:
    """Redaction and size cap, configured once, applied to every record."""

    def __init__(self, pattern: str = DEFAULT_PATTERN, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.pattern = pattern
        self.max_bytes = max_bytes
        self._search = re.compile(pattern, re.IGNORECASE).search
        # A pattern of plain words matches a key only if it also matches the JSON text, so
        # text without a match needs no walk. Anchors, escapes or lookarounds disable this.
        self._prefilter = None if re.search(r"[\\^$(]", pattern) else self._search

    def redact(self, data: Any) -> Any:
        """A copy of `data` with the values of matching keys replaced (non-containers as is)."""
        if isinstance(data, dict):
            search = self._search
            return {
                k: REDACTED if isinstance(k, str) and search(k) else self.redact(v)
                for k, v in data.items()
            }
        if isinstance(data, list):
            return [self.redact(v) for v in data]
        return data

    def matches(self, name: str) -> bool:
        return self._search(name) is not None

    def data_json(self, data: Any) -> tuple[str | None, bool]:
        """The JSON text to store for `data` (redacted, capped) and whether it was truncated."""
        if data is None:
            return None, False
        if isinstance(data, bytes | bytearray | memoryview):
            data = {"_base64": base64.b64encode(bytes(data)).decode("ascii")}
        text = _dumps(data)
        # Fast path: a key can only match when the pattern occurs somewhere in the JSON text.
        prefilter = self._prefilter
        if isinstance(data, dict | list) and (prefilter is None or prefilter(text) is not None):
            text = _dumps(self.redact(data))
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        if size <= self.max_bytes:
            return text, False
        marker = {"_truncated": True, "size": size, "preview": text[:PREVIEW_CHARS]}
        return _dumps(marker), True

    def headers_json(self, headers: dict[str, str]) -> str | None:
        """The JSON text of the record headers, values of matching header names redacted."""
        if not headers:
            return None
        search = self._search
        return _dumps({k: REDACTED if search(k) else v for k, v in headers.items()})
