"""`setup_tracing`: an OpenTelemetry provider exporting over OTLP/HTTP, losing no span silently.

    provider = setup_tracing("orders", endpoint="http://127.0.0.1:4318")

The SDK's `BatchSpanProcessor` drops spans without a trace when its queue is full, and a
failed export loses its batch. `AccountedBatchSpanProcessor` counts both: `.dropped` (queue
full, or ended after shutdown), `.failed` (the exporter refused or raised), `.exported`, and
logs a warning with the counts after each export that lost spans. `dropped_spans()` is the
total lost by every such processor in this process. The queue size and delays are the SDK's
(`OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, ...).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from .errors import UsageError

__all__ = ["AccountedBatchSpanProcessor", "dropped_spans", "setup_tracing"]

_log = logging.getLogger("choreoscope.instrumentation")
_TRACES_PATH = "/v1/traces"

_lost_lock = threading.Lock()
_lost_total = 0


def dropped_spans() -> int:
    """Spans lost so far by every `AccountedBatchSpanProcessor` in this process.

    Lost means dropped (export queue full, or ended after shutdown) or failed to export.
    """
    return _lost_total


def _add_lost(count: int) -> None:
    global _lost_total
    with _lost_lock:
        _lost_total += count


def setup_tracing(
    service_name: str, *, endpoint: str | None = None, set_global: bool = True
) -> TracerProvider:
    """A `TracerProvider` for `service_name` exporting over OTLP/HTTP (protobuf) in batches.

    The resource is `service.name=service_name` merged with `OTEL_RESOURCE_ATTRIBUTES`.
    `endpoint` is a base URL like `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:4318`;
    `/v1/traces` is appended unless already there) and overrides the `OTEL_EXPORTER_OTLP_*`
    endpoint variables; without it the exporter reads them (default `localhost:4318`). Every
    other `OTEL_*` variable (headers, timeout, compression, sampler, batch sizes) works as in
    the SDK. With `set_global=False` the provider is returned without being installed (for
    several services in one process). Spans it loses are counted (see the module docstring).
    """
    if not isinstance(service_name, str) or not service_name:
        raise UsageError(f"expected the service name as a non-empty str, got {service_name!r}")
    url = _traces_url(endpoint) if endpoint is not None else None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    exporter = OTLPSpanExporter(endpoint=url) if url else OTLPSpanExporter()
    provider.add_span_processor(AccountedBatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            _log.warning(
                "choreoscope: a global tracer provider was already installed; the provider "
                "for %r is returned but not global (pass set_global=False to silence this)",
                service_name,
            )
    return provider


def _traces_url(endpoint: Any) -> str:
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise UsageError(
            f"expected the endpoint as a base URL like 'http://127.0.0.1:4318', got {endpoint!r}"
        )
    base = endpoint.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH


class AccountedBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's `BatchSpanProcessor`, counting every span it does not deliver.

    When the queue is full a new span is dropped (the SDK would drop the oldest queued one
    instead, uncounted). `dropped`, `failed` and `exported` are exact; `lost` is
    `dropped + failed`. Takes the same arguments as `BatchSpanProcessor`.
    """

    def __init__(self, span_exporter: SpanExporter, **kwargs: Any) -> None:
        self.dropped = 0
        self.failed = 0
        self.exported = 0
        self._reported = 0
        self._count_lock = threading.Lock()
        self._emit_lock = threading.Lock()
        super().__init__(_CountingExporter(span_exporter, self), **kwargs)
        # The SDK's queue, read to refuse (and count) a span instead of silently losing one.
        inner = getattr(self, "_batch_processor", None)
        self._inner = inner
        self._queue = getattr(inner, "_queue", None)
        max_queue = getattr(inner, "_max_queue_size", None)
        self._max_queue: int = max_queue if isinstance(max_queue, int) else 0
        if self._queue is None or not isinstance(max_queue, int):
            _log.warning("choreoscope: unknown BatchSpanProcessor internals; drops not counted")
            self._queue = None

    @property
    def lost(self) -> int:
        """Spans this processor lost: dropped plus failed."""
        return self.dropped + self.failed

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        queue = self._queue
        if queue is None:
            super().on_end(span)
            return
        with self._emit_lock:
            # Only emitters append to the queue and they all hold this lock, so a queue
            # with room now still has room when the span is appended.
            if len(queue) >= self._max_queue or getattr(self._inner, "_shutdown", False):
                self._count("dropped", 1)
                return
            super().on_end(span)

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        result = super().force_flush(timeout_millis)
        self._report()
        return result

    def shutdown(self) -> None:
        super().shutdown()
        queue = self._queue
        if queue:  # left behind by an exporter that did not finish in time
            self._count("dropped", len(queue))
            queue.clear()
        self._report()

    def _count(self, what: str, count: int) -> None:
        with self._count_lock:
            setattr(self, what, getattr(self, what) + count)
        if what != "exported":
            _add_lost(count)

    def _report(self) -> None:
        with self._count_lock:
            lost = self.dropped + self.failed
            new = lost - self._reported
            self._reported = lost
        if new > 0:
            _log.warning(
                "choreoscope: %d spans lost since the last report (%d in total: %d dropped, "
                "export queue full; %d failed to export); raise OTEL_BSP_MAX_QUEUE_SIZE or "
                "check the collector",
                new,
                lost,
                self.dropped,
                self.failed,
            )


class _CountingExporter(SpanExporter):
    """Passes batches on and tells the processor how many were delivered or lost."""

    def __init__(self, exporter: SpanExporter, processor: AccountedBatchSpanProcessor) -> None:
        self._exporter = exporter
        self._processor = processor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:  # noqa: BLE001 - telemetry never takes the host down
            _log.exception("choreoscope: the span exporter raised; %d spans lost", len(spans))
            result = SpanExportResult.FAILURE
        ok = result is SpanExportResult.SUCCESS
        self._processor._count("exported" if ok else "failed", len(spans))
        self._processor._report()
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)
