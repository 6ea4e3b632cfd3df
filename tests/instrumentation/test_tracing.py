"""setup_tracing against a real OTLP/HTTP endpoint: endpoint and env handling, span loss counted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from choreoscope.instrumentation.errors import UsageError
from choreoscope.instrumentation.tracing import (
    AccountedBatchSpanProcessor,
    dropped_spans,
    setup_tracing,
)


class OTLPReceiver:
    """A tiny OTLP/HTTP traces endpoint: counts spans per path, optionally slow or failing."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.spans: dict[str, int] = {}
        self.resources: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                with receiver.lock:
                    receiver.spans[self.path] = receiver.spans.get(self.path, 0) + count
                    for rs in request.resource_spans:
                        receiver.resources.append(
                            {a.key: a.value.string_value for a in rs.resource.attributes}
                        )
                time.sleep(receiver.delay)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self, path: str = "/v1/traces") -> int:
        with self.lock:
            return self.spans.get(path, 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver()
    yield r
    r.close()


def make_spans(provider: Any, count: int) -> None:
    tracer = provider.get_tracer("test")
    for _ in range(count):
        tracer.start_span("s").end()


def processor_of(provider: Any) -> AccountedBatchSpanProcessor:
    [processor] = provider._active_span_processor._span_processors
    assert isinstance(processor, AccountedBatchSpanProcessor)
    return processor


def test_spans_go_to_the_endpoint_with_the_service_name(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`endpoint` + /v1/traces receives the spans; the resource merges OTEL_RESOURCE_ATTRIBUTES."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,service.name=env")
    provider = setup_tracing("orders", endpoint=receiver.url, set_global=False)
    make_spans(provider, 3)
    provider.shutdown()
    assert receiver.received() == 3
    resource = receiver.resources[0]
    assert resource["service.name"] == "orders"
    assert resource["deployment.environment"] == "test"
    assert trace.get_tracer_provider() is not provider


def test_endpoint_overrides_the_env_endpoints(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit endpoint wins over OTEL_EXPORTER_OTLP_ENDPOINT and ..._TRACES_ENDPOINT."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9/nowhere")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/nowhere")
    provider = setup_tracing("orders", endpoint=receiver.url + "/", set_global=False)
    make_spans(provider, 2)
    provider.shutdown()
    assert receiver.spans == {"/v1/traces": 2}


def test_the_env_endpoint_is_honoured_without_an_argument(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `endpoint`, OTEL_EXPORTER_OTLP_ENDPOINT is the base URL."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    provider = setup_tracing("orders", set_global=False)
    make_spans(provider, 4)
    provider.shutdown()
    assert receiver.spans == {"/v1/traces": 4}


def test_an_endpoint_that_already_names_the_path_is_kept(receiver: OTLPReceiver) -> None:
    """`.../v1/traces` is not doubled."""
    provider = setup_tracing("orders", endpoint=receiver.url + "/v1/traces", set_global=False)
    make_spans(provider, 1)
    provider.shutdown()
    assert receiver.spans == {"/v1/traces": 1}


def test_bad_arguments_are_rejected() -> None:
    """A non-URL endpoint or an empty service name is a UsageError saying expected/got."""
    with pytest.raises(UsageError, match=r"expected the endpoint as a base URL .*, got '127"):
        setup_tracing("orders", endpoint="127.0.0.1:4318", set_global=False)
    with pytest.raises(UsageError, match="expected the service name as a non-empty str, got ''"):
        setup_tracing("", set_global=False)


def test_a_burst_of_100000_spans_loses_none_uncounted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Into a slow endpoint: spans received + spans counted as dropped = spans made, exactly."""
    slow = OTLPReceiver(delay=0.2)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2048")
    before = dropped_spans()
    try:
        provider = setup_tracing("orders", endpoint=slow.url, set_global=False)
        processor = processor_of(provider)
        with caplog.at_level(logging.WARNING, logger="choreoscope.instrumentation"):
            make_spans(provider, 100_000)
            provider.shutdown()
    finally:
        slow.close()
    assert processor.dropped > 0
    assert processor.failed == 0
    assert slow.received() == processor.exported
    assert processor.exported + processor.dropped == 100_000
    assert dropped_spans() - before == processor.dropped
    reports = [r.getMessage() for r in caplog.records if "spans lost" in r.getMessage()]
    assert reports
    assert f"({processor.dropped} in total: {processor.dropped} dropped" in reports[-1]


def test_export_failures_are_counted_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    """Batches the endpoint refuses (HTTP 400) count as failed, and are reported."""
    refusing = OTLPReceiver(status=400)
    try:
        provider = setup_tracing("orders", endpoint=refusing.url, set_global=False)
        processor = processor_of(provider)
        with caplog.at_level(logging.WARNING, logger="choreoscope.instrumentation"):
            make_spans(provider, 5)
            provider.shutdown()
    finally:
        refusing.close()
    assert (processor.exported, processor.failed, processor.dropped) == (0, 5, 0)
    assert any("5 failed to export" in r.getMessage() for r in caplog.records)


def test_set_global_installs_the_provider() -> None:
    """By default the provider becomes the global one (checked in a fresh interpreter)."""
    code = (
        "from opentelemetry import trace\n"
        "from choreoscope.instrumentation.tracing import setup_tracing\n"
        "p = setup_tracing('orders', endpoint='http://127.0.0.1:9')\n"
        "assert trace.get_tracer_provider() is p\n"
        "p.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.broker
def test_producer_sends_into_a_slow_endpoint_lose_no_span_uncounted(
    bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PRODUCER span of a burst of sends is either received by the endpoint or counted."""
    from kafka import KafkaProducer

    from choreoscope.instrumentation.producer import instrument_producer

    slow = OTLPReceiver(delay=0.3)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "256")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
    raw = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        provider = setup_tracing("orders", endpoint=slow.url, set_global=False)
        processor = processor_of(provider)
        producer = instrument_producer(raw, service="orders", tracer_provider=provider)
        for i in range(3000):
            producer.send(topic, value={"i": i})
        producer.flush()
        provider.shutdown()
    finally:
        raw.close(timeout=5)
        slow.close()
    assert processor.dropped > 0
    assert slow.received() == processor.exported
    assert processor.exported + processor.lost == 3000
