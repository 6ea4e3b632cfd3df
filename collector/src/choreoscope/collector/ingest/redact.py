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

_WORD = re.compile(r"[a-z0-9_-]+")
_BOM = b"\xef\xbb\xbf"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class Redactor:
    """Redaction and size cap, configured once, applied to every record."""

    def __init__(self, pattern: str = DEFAULT_PATTERN, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.pattern = pattern
        self.max_bytes = max_bytes
        regex = re.compile(pattern, re.IGNORECASE)
        self._search = regex.search
        # A pattern that is an alternation of plain words can only match a key if one of
        # the words occurs in the JSON text, so text without any needs no walk. Substring
        # tests on the lower-cased text are much cheaper than the regex.
        words = pattern.lower().split("|")
        plain = all(w and _WORD.fullmatch(w) for w in words)
        self._words = tuple(words) if plain else None
        self._bwords = tuple(w.encode() for w in words) if plain else None
        self._verdicts: dict[str, bool] = {}  # key -> matches, keys repeat across records

    def matches(self, name: str) -> bool:
        """Whether values under key `name` are redacted."""
        hit = self._verdicts.get(name)
        if hit is None:
            hit = self._search(name) is not None
            if len(self._verdicts) > 100_000:
                self._verdicts.clear()
            self._verdicts[name] = hit
        return hit

    def redact(self, data: Any) -> Any:
        """A copy of `data` with the values of matching keys replaced (non-containers as is)."""
        kind = type(data)
        if kind is dict:
            verdicts = self._verdicts
            out = {}
            for k, v in data.items():
                hit = verdicts.get(k)
                if hit is None:
                    hit = self.matches(k) if isinstance(k, str) else False
                if hit:
                    out[k] = REDACTED
                elif type(v) is dict or type(v) is list:
                    out[k] = self.redact(v)
                else:
                    out[k] = v
            return out
        if kind is list:
            return [self.redact(v) if type(v) is dict or type(v) is list else v for v in data]
        if isinstance(data, dict | list):  # subclasses: the slow, general way
            return self.redact(dict(data) if isinstance(data, dict) else list(data))
        return data

    def data_json(self, data: Any, raw: bytes | None = None) -> tuple[str | None, bool]:
        """The JSON text to store for `data` (redacted, capped) and whether it was truncated.

        `raw`, when given, is the record value that `data` was parsed from as a whole: its
        text is stored as it is when nothing in it needs redacting (no re-encoding)."""
        if data is None:
            return None, False
        text = None
        if type(data) is dict or type(data) is list:
            if raw is not None and self._bwords is not None and not raw.startswith(_BOM):
                low = raw.lower()
                if not any(w in low for w in self._bwords):
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError:  # UTF-16/32 JSON: re-encode below
                        text = None
                else:
                    text = _dumps(self.redact(data))
            if text is None:
                if self._words is not None:
                    text = _dumps(data)
                    low = text.lower()
                    if any(w in low for w in self._words):
                        text = _dumps(self.redact(data))
                else:
                    text = _dumps(self.redact(data))
        elif isinstance(data, bytes | bytearray | memoryview):
            text = _dumps({"_base64": base64.b64encode(bytes(data)).decode("ascii")})
        elif isinstance(data, dict | list):
            text = _dumps(self.redact(data))
        else:
            text = _dumps(data)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        if size <= self.max_bytes:
            return text, False
        marker = {"_truncated": True, "size": size, "preview": text[:PREVIEW_CHARS]}
        return _dumps(marker), True

    def headers_json(self, headers: Any) -> str | None:
        """The JSON text of record headers (a dict of text, or raw (name, bytes) pairs; the
        first of repeated names wins), values of matching header names redacted."""
        if not headers:
            return None
        items = headers.items() if isinstance(headers, dict) else headers
        verdicts = self._verdicts
        out: dict[str, str] = {}
        for name, value in items:
            if value is None:
                continue
            if type(name) is not str:
                name = bytes(name).decode("utf-8", "replace")
            if name in out:
                continue
            hit = verdicts.get(name)
            if hit is None:
                hit = self.matches(name)
            if hit:
                out[name] = REDACTED
            elif type(value) is bytes:
                out[name] = value.decode("utf-8", "replace")
            else:
                out[name] = value if isinstance(value, str) else bytes(value).decode(
                    "utf-8", "replace")
        return _dumps(out) if out else None
