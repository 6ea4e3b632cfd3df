"""OTLP TracesData (protobuf bytes or OTLP/JSON) -> normalised spans.

`decode_json` takes the parsed JSON object (`{"resourceSpans": [...]}`, as in an OTLP/HTTP
JSON body or Jaeger's api/v3 `result`); `decode_protobuf` takes the bytes of an
ExportTraceServiceRequest (same wire layout as TracesData). Both return a `Decoded`: the spans,
and how many spans were rejected and why (bad ids, times outside uint64 nanoseconds), never
raising for a single bad span.
A body that is not TracesData at all raises `SpanFormatError`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from .model import Span, SpanFormatError, normalize_id, optional_id

# OTLP enums: integers on the wire, names in protobuf's canonical JSON mapping.
_KIND_BY_INT = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer",
                5: "consumer"}
_STATUS_BY_INT = {0: "unset", 1: "ok", 2: "error"}
_UINT64 = 2**64 - 1


@dataclass
class Decoded:
    """Spans decoded from one body, and the spans that had to be rejected."""

    spans: list[Span] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < 10:
            self.reasons.append(reason)


# --- OTLP/JSON -------------------------------------------------------------------------------

def decode_json(data: Any) -> Decoded:
    """Spans of an OTLP/JSON TracesData object (hex or base64 ids, int or named enums)."""
    if not isinstance(data, dict):
        raise SpanFormatError(f"expected a JSON object with resourceSpans, got {type(data).__name__}")
    resource_spans = data.get("resourceSpans", data.get("resource_spans", []))
    if not isinstance(resource_spans, list):
        raise SpanFormatError("expected resourceSpans to be a list, "
                              f"got {type(resource_spans).__name__}")
    out = Decoded()
    for rs in resource_spans:
        if not isinstance(rs, dict):
            raise SpanFormatError(f"expected a resourceSpans object, got {type(rs).__name__}")
        try:
            resource = rs.get("resource") or {}
            service = _json_attrs(resource.get("attributes")).get("service.name")
            scope_spans = _json_list(rs.get("scopeSpans", rs.get(
                "scope_spans", rs.get("instrumentationLibrarySpans", []))), "scopeSpans")
            span_lists = [_json_list(ss.get("spans"), "spans") for ss in scope_spans]
        except (TypeError, ValueError, AttributeError) as exc:
            raise SpanFormatError(f"expected an OTLP resourceSpans object: {exc}") from None
        for raw in (span for spans in span_lists for span in spans):
            try:
                out.spans.append(_json_span(raw, service))
            except SpanFormatError as exc:
                out.reject(str(exc))
            except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as exc:
                out.reject(f"malformed span: {type(exc).__name__}: {exc}")
    return out


def _json_list(value: Any, what: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SpanFormatError(f"expected {what} to be a list of objects, got {value!r:.80}")
    return value


def _json_span(raw: dict[str, Any], service: Any) -> Span:
    trace_id = normalize_id(_get(raw, "traceId", "trace_id"), 16, "trace id")
    span_id = normalize_id(_get(raw, "spanId", "span_id"), 8, "span id")
    start_ns = _nanos(_get(raw, "startTimeUnixNano", "start_time_unix_nano"))
    end_ns = _nanos(_get(raw, "endTimeUnixNano", "end_time_unix_nano"))
    status = raw.get("status") or {}
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=optional_id(_get(raw, "parentSpanId", "parent_span_id"), 8,
                                   "parent span id"),
        name=str(raw.get("name") or ""),
        kind=_enum(raw.get("kind"), _KIND_BY_INT, "SPAN_KIND_", "internal"),
        service=service if isinstance(service, str) else None,
        start_us=start_ns // 1000,
        duration_us=max(0, end_ns - start_ns) // 1000,
        status=_enum(status.get("code"), _STATUS_BY_INT, "STATUS_CODE_", "unset"),
        status_message=_text(status.get("message")),
        attributes=_json_attrs(raw.get("attributes")),
        links=[_json_link(link) for link in _json_list(raw.get("links"), "links")],
        events=[
            {"name": ev.get("name") or "",
             "time_us": _nanos(_get(ev, "timeUnixNano", "time_unix_nano")) // 1000,
             "attributes": _json_attrs(ev.get("attributes"))}
            for ev in _json_list(raw.get("events"), "events")
        ],
    )


def _json_link(link: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "trace_id": normalize_id(_get(link, "traceId", "trace_id"), 16, "link trace id"),
        "span_id": normalize_id(_get(link, "spanId", "span_id"), 8, "link span id"),
    }
    attrs = _json_attrs(link.get("attributes"))
    if attrs:
        out["attributes"] = attrs
    return out


def _text(value: Any) -> str | None:
    """A status message as text: OTLP says string, but a JSON body can carry anything; a
    number or list is kept as its JSON text rather than failing the spans stored with it."""
    if value is None or value == "" or value is False:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _nanos(value: Any) -> int:
    """A fixed64 time in nanoseconds: 0 <= t < 2**64, i.e. 1970 to 2554 (no date past 9999
    can reach the store from OTLP)."""
    if value is None or value == "":
        return 0
    try:
        nanos = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SpanFormatError(f"expected a time in nanoseconds, got {value!r:.80}") from None
    if not 0 <= nanos <= _UINT64:
        raise SpanFormatError(f"expected a time in nanoseconds within uint64 (0..{_UINT64}), "
                              f"got {value!r:.80}")
    return nanos


def _enum(value: Any, by_int: dict[int, str], prefix: str, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return by_int.get(value, default)
    if isinstance(value, str):
        name = value.upper().removeprefix(prefix).lower()
        if name == "unspecified":
            return default
        if name in by_int.values():
            return name
        if value.isdigit():
            return by_int.get(int(value), default)
    raise SpanFormatError(f"expected an OTLP enum (int or {prefix}* name), got {value!r}")


def _json_attrs(attrs: Any) -> dict[str, Any]:
    if not attrs:
        return {}
    if not isinstance(attrs, list):
        raise SpanFormatError(f"expected attributes to be a list, got {type(attrs).__name__}")
    out: dict[str, Any] = {}
    for kv in attrs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise SpanFormatError(f"expected an attribute {{key, value}}, got {kv!r:.80}")
        out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _json_value(value: Any) -> Any:
    """An OTLP/JSON AnyValue as a plain JSON value (int64 strings become ints)."""
    if not isinstance(value, dict) or not value:
        return None
    if "stringValue" in value or "string_value" in value:
        return _get(value, "stringValue", "string_value")
    if "boolValue" in value or "bool_value" in value:
        return bool(_get(value, "boolValue", "bool_value"))
    if "intValue" in value or "int_value" in value:
        raw = _get(value, "intValue", "int_value")
        try:
            return int(raw)
        except (TypeError, ValueError, OverflowError):
            raise SpanFormatError(f"expected an int64 attribute value, got {raw!r}") from None
    if "doubleValue" in value or "double_value" in value:
        raw = _get(value, "doubleValue", "double_value")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise SpanFormatError(f"expected a double attribute value, got {raw!r}") from None
    if "bytesValue" in value or "bytes_value" in value:
        return _get(value, "bytesValue", "bytes_value")  # base64 text, as sent
    if "arrayValue" in value or "array_value" in value:
        arr = _get(value, "arrayValue", "array_value") or {}
        return [_json_value(v) for v in arr.get("values") or []]
    if "kvlistValue" in value or "kvlist_value" in value:
        kvl = _get(value, "kvlistValue", "kvlist_value") or {}
        return _json_attrs(kvl.get("values"))
    return None


# --- OTLP/protobuf ---------------------------------------------------------------------------

def decode_protobuf(body: bytes) -> Decoded:
    """Spans of a protobuf ExportTraceServiceRequest (or TracesData: same wire layout)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise SpanFormatError(f"expected an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    out = Decoded()
    for rs in request.resource_spans:
        service = _pb_attrs(rs.resource.attributes).get("service.name")
        for ss in rs.scope_spans:
            for raw in ss.spans:
                try:
                    out.spans.append(_pb_span(raw, service))
                except SpanFormatError as exc:
                    out.reject(str(exc))
    return out


def _pb_span(raw: Any, service: Any) -> Span:
    return Span(
        trace_id=normalize_id(raw.trace_id, 16, "trace id"),
        span_id=normalize_id(raw.span_id, 8, "span id"),
        parent_span_id=optional_id(raw.parent_span_id, 8, "parent span id"),
        name=raw.name,
        kind=_KIND_BY_INT.get(raw.kind, "internal"),
        service=service if isinstance(service, str) else None,
        start_us=raw.start_time_unix_nano // 1000,
        duration_us=max(0, raw.end_time_unix_nano - raw.start_time_unix_nano) // 1000,
        status=_STATUS_BY_INT.get(raw.status.code, "unset"),
        status_message=raw.status.message or None,
        attributes=_pb_attrs(raw.attributes),
        links=[_pb_link(link) for link in raw.links],
        events=[{"name": ev.name, "time_us": ev.time_unix_nano // 1000,
                 "attributes": _pb_attrs(ev.attributes)} for ev in raw.events],
    )


def _pb_link(link: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"trace_id": normalize_id(link.trace_id, 16, "link trace id"),
                           "span_id": normalize_id(link.span_id, 8, "link span id")}
    attrs = _pb_attrs(link.attributes)
    if attrs:
        out["attributes"] = attrs
    return out


def _pb_attrs(attrs: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in attrs}


def _pb_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _pb_attrs(value.kvlist_value.values)
    return getattr(value, which)

