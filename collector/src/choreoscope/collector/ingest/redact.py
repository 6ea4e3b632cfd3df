"""Redact sensitive fields and cap the size of the data before it reaches the store.

`Redactor(pattern, max_bytes)` replaces the value of every key matching `pattern`
(case-insensitive, searched anywhere in the key, at any depth, in dicts inside lists too) by
"[REDACTED]", and turns data whose JSON is larger than `max_bytes` into a truncation marker
`{"_truncated": true, "size": N, "preview": "..."}` whose preview is cut from the redacted
JSON, so a redacted value never reaches the store.

Data that cannot be walked is never stored unredacted: text that is not JSON (NaN, a
Python dict, ...) or bytes are withheld behind a marker
`{"_withheld": true, "size": N, "reason": "..."}` when Python's json reads them and a key
matches (NaN, a JSON document inside a string, UTF-16 bytes), or when it does not read
them and the pattern matches the text or one of its words. Data nested deeper than
`MAX_DEPTH` becomes a marker too (the same in every process, whatever its stack).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_PATTERN = r"email|phone|card|password|token|secret"
REDACTED = "[REDACTED]"
DEFAULT_MAX_BYTES = 64 * 1024
PREVIEW_CHARS = 1024
MAX_DEPTH = 200  # data nested deeper is not walked (nor encoded by the recursive stdlib)


class _TooDeep(Exception):
    """Data nested deeper than MAX_DEPTH."""


def _deeper_than(obj: Any, limit: int) -> bool:
    """Whether containers nest in `obj` deeper than `limit` levels (no recursion)."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            values = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in values)
    return False


# The words of a text that is not JSON, tried as keys (a pattern with anchors matches no
# whole text): what lies between quotes, brackets, separators and spaces.
_TOKENS = re.compile(r"""[^\s"'{}\[\](),:;=]+""")
_NESTING_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def _text_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON-like `text` opens brackets deeper than `limit` levels outside strings."""
    depth = 0
    in_string = False
    for token in _NESTING_TOKENS.finditer(text):
        t = token.group()
        if t == '"':
            in_string = not in_string
        elif in_string or len(t) == 2:
            continue
        elif t in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _std_dumps_checked(obj: Any) -> str:
    """The stdlib encoding (recursive: refused beyond MAX_DEPTH, so its outcome does not
    depend on how deep the caller's stack is)."""
    if _deeper_than(obj, MAX_DEPTH):
        raise _TooDeep
    return _std_dumps(obj)

_WORD = re.compile(r"[a-z0-9_-]+")
_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

_dumps: Callable[[Any], str]

try:
    from orjson import dumps as _orjson_dumps
except ImportError as exc:  # pragma: no cover - orjson is a collector dependency
    if exc.name != "orjson":
        raise

    _dumps = _std_dumps_checked
else:

    def _dumps(obj: Any) -> str:
        """Compact JSON text; orjson when it can (5-10x faster), the stdlib otherwise
        (integers beyond 64 bits, non-string keys, NaN, unknown types)."""
        try:
            return _orjson_dumps(obj).decode("utf-8")
        except (TypeError, ValueError):
            return _std_dumps_checked(obj)


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
        self._clean_names: set[str] = set()  # header names known not to match

    def matches(self, name: str) -> bool:
        """Whether values under key `name` are redacted."""
        hit = self._verdicts.get(name)
        if hit is None:
            hit = self._search(name) is not None
            if len(self._verdicts) > 100_000:
                self._verdicts.clear()
            self._verdicts[name] = hit
        return hit

    def redact(self, data: Any, depth: int = 0) -> Any:
        """A copy of `data` with the values of matching keys replaced (non-containers as is);
        raises _TooDeep for containers nested deeper than MAX_DEPTH."""
        if depth > MAX_DEPTH:
            raise _TooDeep
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
                    out[k] = self.redact(v, depth + 1)
                else:
                    out[k] = v
            return out
        if kind is list:
            return [self.redact(v, depth + 1) if type(v) is dict or type(v) is list else v
                    for v in data]
        if isinstance(data, dict | list):  # subclasses: the slow, general way
            return self.redact(dict(data) if isinstance(data, dict) else list(data), depth)
        return data

    def data_json(self, data: Any, raw: bytes | None = None) -> tuple[str | None, bool]:
        """The JSON text to store for `data` (redacted, capped) and whether it was truncated.

        `raw`, when given, is the record value that `data` was parsed from as a whole: its
        text is stored as it is when nothing in it needs redacting (no re-encoding)."""
        if data is None:
            return None, False
        try:
            text = self._json_text(data, raw)
        except _TooDeep:
            return _withheld(data, raw, f"nested deeper than {MAX_DEPTH} levels")
        if text is None:
            return _withheld(data, raw, "not JSON that redaction can walk, and it may "
                                        "hold a field the redaction pattern matches")
        if text.isascii():
            size = len(text)
        else:
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:  # lone surrogates (JSON "\ud800"): keep them escaped
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
                size = len(text.encode("utf-8"))
        if size <= self.max_bytes:
            return text, False
        marker = {"_truncated": True, "size": size, "preview": text[:PREVIEW_CHARS]}
        return _dumps(marker), True

    def _json_text(self, data: Any, raw: bytes | None) -> str | None:
        """The JSON text of `data`, redacted; None when it must be withheld."""
        text = None
        if type(data) is dict or type(data) is list:
            # The word filter below may skip the walk only for plain ASCII UTF-8: a
            # backslash may escape a key's letters (`"em\\u0061il"`), a NUL means UTF-16/32
            # text, and case-insensitive matching folds some non-ASCII letters into ASCII
            # ones (U+017F long s, U+212A Kelvin sign, U+0130 dotted capital I).
            if (raw is not None and self._bwords is not None and raw.isascii()
                    and b"\\" not in raw and b"\0" not in raw):
                low = raw.lower()
                for word in self._bwords:
                    if word in low:
                        text = _dumps(self.redact(data))
                        break
                else:
                    text = raw.decode("ascii")
            if text is None:
                if self._words is not None:
                    text = _dumps(data)
                    lowered = text.lower()
                    if not text.isascii() or any(w in lowered for w in self._words):
                        text = _dumps(self.redact(data))
                else:
                    text = _dumps(self.redact(data))
        elif isinstance(data, bytes | bytearray | memoryview):
            blob = bytes(data)
            if self._unwalked(blob, blob.replace(b"\0", b"").decode("latin-1")):
                return None
            text = _dumps({"_base64": base64.b64encode(blob).decode("ascii")})
        elif isinstance(data, dict | list):
            text = _dumps(self.redact(data))
        elif isinstance(data, str):
            if self._unwalked(data, data):
                return None
            text = _dumps(data)
        else:
            text = _dumps(data)
        return text

    def _unwalked(self, value: str | bytes, text: str) -> bool:
        """Whether `value`, data the decoder could not read as JSON (or a JSON string) with
        `text` its readable form, may hold a redacted field: Python's json reads it (NaN,
        a JSON document inside a string, UTF-16) and a key matches, or it does not read
        and the pattern matches the text or one of its words."""
        matched = self._search(text) is not None or (
            # a pattern of plain words matches a text wherever it matches one of its words;
            # another (anchors, ...) is tried on each word, as on keys
            self._words is None and any(self.matches(w) for w in _TOKENS.findall(text)))
        if not matched and "\\" not in text and text.lstrip()[:1] not in ("{", "["):
            return False
        if _text_deeper_than(text, MAX_DEPTH):
            raise _TooDeep
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict | list):
            return self.redact(parsed) != parsed
        return matched

    def text_headers_json(self, headers: dict[str, str]) -> str | None:
        """`headers_json` of headers already decoded to text (names distinct)."""
        if not headers:
            return None
        if headers.keys() <= self._clean_names:
            return _dumps(headers)
        return self.headers_json(list(headers.items()))

    def headers_json(self, headers: Any) -> str | None:
        """The JSON text of record headers (a dict of text, or raw (name, bytes) pairs; the
        first of repeated names wins), values of matching header names redacted."""
        if not headers:
            return None
        items: Sequence[Any]
        if isinstance(headers, dict):
            items = list(headers.items())
        else:
            items = headers if isinstance(headers, list | tuple) else list(headers)
        try:
            # Fast path: str names, bytes values (what both Kafka clients hand out).
            out = {k: v.decode("utf-8", "replace") for k, v in items}
            if len(out) != len(items):  # repeated names (first wins) or None values
                out = self._headers_slow(items)
        except (AttributeError, TypeError):
            out = self._headers_slow(items)
        if not out:
            return None
        clean = self._clean_names
        if not out.keys() <= clean:
            for name in list(out):
                if name in clean:
                    continue
                if not isinstance(name, str):
                    return _dumps(self._headers_slow(items))
                if self.matches(name):
                    out[name] = REDACTED
                elif len(clean) < 10_000:
                    clean.add(name)
        return _dumps(out)

    def fit_headers(self, text: str | None) -> tuple[str | None, str | None]:
        """Headers JSON (`headers_json`) within `max_bytes`, as data is, and the problem to
        record when it was larger: names and values are cut to `HEADER_CHARS` characters,
        and headers that still do not fit are left out, in the order they came."""
        if text is None or len(text) * 4 <= self.max_bytes:  # a character is <= 4 bytes
            return text, None
        size = _utf8_size(text)
        if size <= self.max_bytes:
            return text, None
        kept: dict[str, str] = {}
        used = 2  # {}
        headers = json.loads(text)
        for name, value in headers.items():
            name, value = _cut(name), _cut(value)
            item = _utf8_size(_dumps({name: value})) - 1  # its "name":"value", and a comma
            if name in kept or used + item > self.max_bytes:
                continue
            kept[name] = value
            used += item
        left_out = len(headers) - len(kept)
        return _dumps(kept), (
            f"{HEADERS_TOO_LARGE}: {size} bytes of headers, over {self.max_bytes}; names and "
            f"values cut to {HEADER_CHARS} characters"
            + (f", {left_out} of {len(headers)} headers left out" if left_out else ""))

    def _headers_slow(self, items: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in items:
            if value is None:
                continue
            if not isinstance(name, str):
                name = bytes(name).decode("utf-8", "replace")
            if name in out:
                continue
            if self.matches(name):
                out[name] = REDACTED
            elif isinstance(value, str):
                out[name] = value
            else:
                out[name] = bytes(value).decode("utf-8", "replace")
        return out


HEADERS_TOO_LARGE = "headers_too_large"
HEADER_CHARS = 256  # of a name or value, when the headers are over max_bytes


def _cut(text: str) -> str:
    return text if len(text) <= HEADER_CHARS else text[:HEADER_CHARS - 1] + "\u2026"


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _withheld(data: Any, raw: bytes | None, reason: str) -> tuple[str, bool]:
    """The marker stored instead of data that could not be redacted."""
    if raw is not None:
        size = len(raw)
    elif isinstance(data, bytes | bytearray | memoryview):
        size = len(bytes(data))
    elif isinstance(data, str):
        size = len(data.encode("utf-8", "surrogatepass"))
    else:
        size = None
    return _dumps({"_withheld": True, "size": size, "reason": reason}), True
