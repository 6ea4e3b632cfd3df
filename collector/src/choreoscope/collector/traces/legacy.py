"""Jaeger's legacy JSON model (`GET /api/traces/{id}`: `{data: [trace], errors}`) -> spans.

Span kind is the `span.kind` tag, status the `otel.status_code` / `error` tags, the service
`processes[processID].serviceName`; 16-hex trace ids (high 64 bits zero) are left-padded.
Spans with a time (microseconds) before 1970 or after 9999 are skipped, like malformed ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from .model import Span, SpanFormatError, check_time_us, normalize_id, optional_id

log = logging.getLogger(__name__)


def decode_legacy(body: Any) -> list[Span]:
    """Spans of a legacy `{data: [trace...], errors}` envelope, or of one legacy trace object."""
    if isinstance(body, dict) and "spans" in body:
        return _legacy_trace(body)
    if not isinstance(body, dict):
        raise SpanFormatError(f"expected a legacy Jaeger envelope, got {type(body).__name__}")
    errors = body.get("errors")
    data = body.get("data")
    if errors and not data:
        codes = [e.get("code") for e in errors if isinstance(e, dict)]
        if codes and all(c == 404 for c in codes):
            return []
        raise SpanFormatError(f"Jaeger legacy API errors: {json.dumps(errors)[:500]}")
    if data is not None and not isinstance(data, list):
        raise SpanFormatError(f"expected the legacy data to be a list, got {type(data).__name__}")
    spans: list[Span] = []
    for trace in data or []:
        if isinstance(trace, dict):
            spans.extend(_legacy_trace(trace))
    return spans


def _legacy_trace(trace: dict[str, Any]) -> list[Span]:
    processes = trace.get("processes") or {}
    raw_spans = trace.get("spans") or []
    if not isinstance(raw_spans, list):
        log.warning("skipping a legacy Jaeger trace whose spans are a %s",
                    type(raw_spans).__name__)
        return []
    spans: list[Span] = []
    for raw in raw_spans:
        try:
            spans.append(_legacy_span(raw, processes))
        except (SpanFormatError, TypeError, ValueError, OverflowError, AttributeError,
                KeyError) as exc:
            log.warning("skipping a malformed legacy Jaeger span: %s", exc)
    return spans


def _legacy_span(raw: dict[str, Any], processes: dict[str, Any]) -> Span:
    trace_id = normalize_id(raw.get("traceID"), 16, "trace id")
    attrs = _legacy_tags(raw.get("tags"))
    kind = str(attrs.pop("span.kind", "internal") or "internal").lower()
    if kind not in ("internal", "server", "client", "producer", "consumer"):
        kind = "internal"
    status = "unset"
    code = attrs.pop("otel.status_code", None)
    message = attrs.pop("otel.status_description", None)
    if str(code).upper() == "OK":
        status = "ok"
    if str(code).upper() == "ERROR" or attrs.get("error") in (True, "true"):
        status = "error"
    parent, links = _legacy_references(raw.get("references"), trace_id)
    process_id = raw.get("processID")
    process = ((processes.get(process_id) if isinstance(process_id, str) else None)
               or raw.get("process") or {})
    start_us = check_time_us(int(raw.get("startTime") or 0), "start time")
    duration_us = max(0, int(raw.get("duration") or 0))
    check_time_us(start_us + duration_us, "end time")
    return Span(
        trace_id=trace_id,
        span_id=normalize_id(raw.get("spanID"), 8, "span id"),
        parent_span_id=parent,
        name=str(raw.get("operationName") or ""),
        kind=kind,
        service=process.get("serviceName") if isinstance(process, dict) else None,
        start_us=start_us,
        duration_us=duration_us,
        status=status,
        status_message=str(message) if message else None,
        attributes=attrs,
        links=links,
        events=[_legacy_log(entry) for entry in raw.get("logs") or [] if isinstance(entry, dict)],
    )


def _legacy_references(refs: Any, trace_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Parent = first CHILD_OF in the same trace (else first FOLLOWS_FROM); the rest are links."""
    parsed: list[tuple[str, str, str]] = []
    for ref in refs or []:
        try:
            ref_trace = normalize_id(ref.get("traceID"), 16, "reference trace id")
            ref_span = optional_id(ref.get("spanID"), 8, "reference span id")
        except (SpanFormatError, AttributeError):
            continue
        if ref_span:
            parsed.append((str(ref.get("refType") or "CHILD_OF").upper(), ref_trace, ref_span))
    parent_index = next((i for i, (t, tr, _) in enumerate(parsed)
                         if t == "CHILD_OF" and tr == trace_id), None)
    if parent_index is None:
        parent_index = next((i for i, (_, tr, _) in enumerate(parsed) if tr == trace_id), None)
    parent = parsed[parent_index][2] if parent_index is not None else None
    links = [{"trace_id": tr, "span_id": sp, "attributes": {"opentracing.ref_type": t.lower()}}
             for i, (t, tr, sp) in enumerate(parsed) if i != parent_index]
    return parent, links


def _legacy_tags(tags: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in tags or []:
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            continue
        value = tag.get("value")
        kind = tag.get("type")
        if kind == "int64" and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value)
        elif kind == "bool" and isinstance(value, str):
            value = value.lower() == "true"
        out[tag["key"]] = value
    return out


def _legacy_log(entry: dict[str, Any]) -> dict[str, Any]:
    fields = _legacy_tags(entry.get("fields"))
    name = fields.pop("event", None)
    return {"name": str(name) if name is not None else "log",
            "time_us": check_time_us(int(entry.get("timestamp") or 0), "log time"),
            "attributes": fields}
