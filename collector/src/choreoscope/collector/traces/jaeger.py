"""Jaeger query API client: api/v3 (OTLP/JSON), with the legacy `/api/traces/{id}` fallback.

Errors: `JaegerUnavailable` when Jaeger cannot be reached (connection refused, timeout),
`JaegerError` for any other failure (HTTP 400/500, a body that is not JSON). "No traces found"
(HTTP 404 with Jaeger's JSON error body) is not an error: it returns nothing.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from ..store.masking import mask_secrets
from .legacy import decode_legacy
from .model import Span, SpanFormatError, check_time_us, normalize_id
from .otlp import decode_json

log = logging.getLogger(__name__)

# Services Jaeger reports about itself.
JAEGER_OWN_SERVICES = frozenset({"jaeger", "jaeger-query", "jaeger-all-in-one"})
_MAX_BODY = 256 * 1024 * 1024
# The whole answer must arrive within this many `timeout_s` (30 s by default).
_WHOLE_ANSWER_WAITS = 6


class JaegerError(RuntimeError):
    """Jaeger answered, but not with what was asked for."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JaegerUnavailable(JaegerError, ConnectionError):
    """Jaeger could not be reached (refused, reset, timed out)."""


class _NotFound(Exception):
    def __init__(self, route_missing: bool) -> None:
        self.route_missing = route_missing


class JaegerClient:
    """Reads traces from a Jaeger query service at `base_url` (e.g. http://localhost:16686)."""

    def __init__(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("expected a Jaeger URL like http://host:16686, got "
                             f"{mask_secrets(base_url)!r}")
        # user:password@ in the URL is HTTP basic auth, as curl takes it; it is sent as a
        # header and never named in a message (urllib took it for part of the host name)
        self._headers = {"Accept": "application/json"}
        if parsed.username is not None or parsed.password is not None:
            user = urllib.parse.unquote(parsed.username or "")
            password = urllib.parse.unquote(parsed.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
            host = parsed.netloc.rsplit("@", 1)[1]
            base_url = urllib.parse.urlunsplit(parsed._replace(netloc=host))
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.api_v3: bool | None = None  # None until learned; False: only the legacy API exists

    # --- public API --------------------------------------------------------------------------

    def get_trace(self, trace_id: str) -> list[Span]:
        """All spans of one trace; [] when Jaeger has no such trace (yet)."""
        trace_id = normalize_id(trace_id, 16, "trace id")
        if self.api_v3 is not False:
            try:
                body = self._get(f"/api/v3/traces/{trace_id}")
            except _NotFound as nf:
                if not nf.route_missing:
                    self.api_v3 = True
                    return []
                self.api_v3 = False
            else:
                self.api_v3 = True
                return _decode_v3(body)
        try:
            body = self._get(f"/api/traces/{trace_id}")
        except _NotFound as nf:
            self._check_jaeger(nf, "/api/traces/{id}")
            return []
        return [s for s in _decode_legacy(body) if s.trace_id == trace_id]

    def services(self) -> list[str]:
        """Service names Jaeger knows, without Jaeger's own."""
        if self.api_v3 is not False:
            try:
                body = self._get("/api/v3/services")
            except _NotFound as nf:
                if not nf.route_missing:
                    return []
                self.api_v3 = False
            else:
                self.api_v3 = True
                names = body.get("services") if isinstance(body, dict) else None
                return _service_names(names)
        try:
            body = self._get("/api/services")
        except _NotFound as nf:
            self._check_jaeger(nf, "/api/services")
            return []
        return _service_names(body.get("data") if isinstance(body, dict) else None)

    def find_traces(self, service: str, start_min_ms: int, start_max_ms: int,
                    limit: int = 100) -> dict[str, list[Span]]:
        """Traces of `service` with spans starting in the window, grouped by trace id."""
        if self.api_v3 is not False:
            query = urllib.parse.urlencode({
                "query.service_name": service,
                "query.start_time_min": rfc3339(start_min_ms),
                "query.start_time_max": rfc3339(start_max_ms),
                "query.num_traces": str(limit),
            })
            try:
                body = self._get(f"/api/v3/traces?{query}")
            except _NotFound as nf:
                if not nf.route_missing:
                    return {}
                self.api_v3 = False
            else:
                self.api_v3 = True
                return group_by_trace(_decode_v3(body))
        query = urllib.parse.urlencode({"service": service, "start": start_min_ms * 1000,
                                        "end": start_max_ms * 1000, "limit": limit})
        try:
            body = self._get(f"/api/traces?{query}")
        except _NotFound as nf:
            self._check_jaeger(nf, "/api/traces")
            return {}
        return group_by_trace(_decode_legacy(body))

    def operations(self, service: str, span_kind: str | None = None) -> list[dict[str, str]]:
        """Operations of a service (api/v3): [{name, span_kind}]."""
        params = {"service": service}
        if span_kind:
            params["spanKind"] = span_kind
        try:
            body = self._get("/api/v3/operations?" + urllib.parse.urlencode(params))
        except _NotFound:
            return []
        ops = body.get("operations") if isinstance(body, dict) else None
        return [{"name": str(op.get("name", "")), "span_kind": str(op.get("spanKind", ""))}
                for op in ops or [] if isinstance(op, dict)]

    def trace_summaries(self, service: str, start_min_ms: int, start_max_ms: int,
                        limit: int = 100) -> list[dict[str, Any]]:
        """Summaries of matching traces (api/v3 trace-summaries, Jaeger >= 2.19), times in us."""
        query = urllib.parse.urlencode({
            "query.service_name": service,
            "query.start_time_min": rfc3339(start_min_ms),
            "query.start_time_max": rfc3339(start_max_ms),
            "query.num_traces": str(limit),
        })
        try:
            body = self._get(f"/api/v3/trace-summaries?{query}")
        except _NotFound:
            return []
        out = []
        for raw in (body.get("summaries") if isinstance(body, dict) else None) or []:
            try:
                out.append({
                    "trace_id": normalize_id(raw.get("traceId"), 16, "trace id"),
                    "root_service": raw.get("rootServiceName"),
                    "root_operation": raw.get("rootOperationName"),
                    "span_count": int(raw.get("spanCount") or 0),
                    "error_span_count": int(raw.get("errorSpanCount") or 0),
                    "start_us": check_time_us(int(raw.get("minStartTimeUnixNano") or 0)
                                              // 1000, "trace start time"),
                    "end_us": check_time_us(int(raw.get("maxEndTimeUnixNano") or 0) // 1000,
                                            "trace end time"),
                    "services": sorted(str(s.get("name")) for s in raw.get("services") or []
                                       if isinstance(s, dict)),
                })
            except (SpanFormatError, TypeError, ValueError, OverflowError,
                    AttributeError) as exc:
                log.warning("skipping a malformed Jaeger trace summary: %s", exc)
        return out

    # --- HTTP --------------------------------------------------------------------------------

    def _check_jaeger(self, nf: _NotFound, route: str) -> None:
        """A 404 of the legacy API that is not Jaeger's own "not found": neither API is
        there, so this is not a Jaeger query service (a wrong port, an OTLP receiver, a
        proxy path). Every trace waits, none is taken for missing."""
        if nf.route_missing:
            self.api_v3 = None  # learn again once the URL answers
            raise JaegerUnavailable(
                f"{self.base_url} is not a Jaeger query API: GET {route} and its api/v3 form "
                "answered 404 without Jaeger's error body (expected the query service, "
                "e.g. http://jaeger:16686)")

    def _get(self, path: str) -> Any:
        url = self.base_url + path
        request = urllib.request.Request(url, headers=self._headers)
        deadline = _Deadline(_WHOLE_ANSWER_WAITS * self.timeout_s)
        with deadline:
            try:
                with deadline.opener.open(request, timeout=self.timeout_s) as resp:
                    raw = _read_by(resp, deadline)
            except urllib.error.HTTPError as exc:
                raw = _read_quietly(exc)
                if deadline.passed:  # its body was cut short: no telling what it said
                    raise self._unavailable(exc, path, deadline) from None
                if exc.code == 404:
                    raise _NotFound(route_missing=not _is_jaeger_not_found(raw)) from None
                raise JaegerError(f"Jaeger GET {path}: HTTP {exc.code}: "
                                  f"{_error_message(raw)}", exc.code) from None
            except (OSError, http.client.HTTPException) as exc:
                raise self._unavailable(exc, path, deadline) from None
        if len(raw) > _MAX_BODY:
            raise JaegerError(f"Jaeger GET {path}: body over {_MAX_BODY} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise JaegerError(f"Jaeger GET {path}: expected a JSON body, got "
                              f"{raw[:80]!r}") from None

    def _unavailable(self, exc: Exception, path: str, deadline: _Deadline) -> JaegerError:
        """What a failed exchange means to the caller: the deadline passed (it cuts the
        connection, whatever the read under way then sees), a timeout, or no connection."""
        if deadline.passed:
            return JaegerUnavailable(
                f"Jaeger at {self.base_url} did not finish its answer within "
                f"{deadline.seconds:g}s (GET {path})")
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError
            return JaegerUnavailable(f"Jaeger at {self.base_url} timed out after "
                                     f"{self.timeout_s:g}s (GET {path})")
        # refused, reset mid-response, a bad status line, ...
        return JaegerUnavailable(f"Jaeger at {self.base_url} unreachable: {reason}")


class _Deadline:
    """A whole exchange's time limit. The socket timeout bounds each wait only, so a server
    sending a byte now and then (of its status line, headers or body) held the fetching
    thread, and all the collector's upkeep on it, for as long as it liked. At the deadline a
    timer shuts the connection's socket down, which ends any read under way."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self.opener = urllib.request.build_opener(_WatchedHTTP(self), _WatchedHTTPS(self))

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    @property
    def passed(self) -> bool:
        return self._expired or time.monotonic() >= self._at

    @property
    def cut(self) -> bool:
        """Whether the timer has shut the connection down."""
        return self._expired

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self._expired:
                return
        _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline
             ) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPConnection, deadline)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._connection = _watched(http.client.HTTPSConnection, deadline)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)  # the default context, as urlopen's


def _read_by(resp: Any, deadline: _Deadline) -> bytes:
    """The body, at most `_MAX_BODY` + 1 bytes; TimeoutError once the deadline passes."""
    parts: list[bytes] = []
    size = 0
    while size <= _MAX_BODY:
        if deadline.passed:
            raise TimeoutError
        part = resp.read1(min(1 << 20, _MAX_BODY + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    # A cut connection reads as the end of the answer: what came is whole only when it is
    # all its Content-Length announced (an answer read whole before the cut is kept).
    if deadline.cut and getattr(resp, "length", None) != 0:
        raise TimeoutError
    return b"".join(parts)


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(64 * 1024)
    except Exception:  # noqa: BLE001 - the status alone is enough
        return b""


def _is_jaeger_not_found(raw: bytes) -> bool:
    """Jaeger's own "no traces" 404 (JSON error body), as opposed to a missing route."""
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and ("error" in body or "errors" in body)


def _error_message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("msg") or errors[0])
    return text[:500]


def _decode_v3(body: Any) -> list[Span]:
    if not isinstance(body, dict) or not isinstance(body.get("result"), dict):
        raise JaegerError(f"expected an api/v3 body {{\"result\": {{...}}}}, got {str(body)[:80]}")
    try:
        decoded = decode_json(body["result"])
    except SpanFormatError as exc:
        raise JaegerError(f"malformed api/v3 traces: {exc}") from None
    if decoded.rejected:
        log.warning("Jaeger returned %d malformed spans: %s", decoded.rejected,
                    "; ".join(decoded.reasons[:3]))
    return decoded.spans


def _decode_legacy(body: Any) -> list[Span]:
    try:
        return decode_legacy(body)
    except SpanFormatError as exc:
        raise JaegerError(f"malformed legacy traces: {exc}") from None


def _service_names(names: Any) -> list[str]:
    if not isinstance(names, list):
        return []
    return sorted(n for n in names if isinstance(n, str) and n not in JAEGER_OWN_SERVICES)


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as RFC 3339 UTC with nanoseconds (api/v3 query times)."""
    seconds, rem = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem * 1_000_000:09d}Z"


def group_by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    """Search results come merged in one list: split them per trace id."""
    out: dict[str, list[Span]] = {}
    for span in spans:
        out.setdefault(span.trace_id, []).append(span)
    return out
