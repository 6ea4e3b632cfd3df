"""OTLP/HTTP trace receiver (`POST /v1/traces`) for the embedded mode without Jaeger.

Accepts protobuf (`application/x-protobuf`) and JSON (`application/json`) bodies, optionally
gzip-compressed, and answers as the OTLP/HTTP specification says: 200 with an
ExportTraceServiceResponse in the request's encoding (with `partial_success` when spans were
rejected or dropped), 400 with a google.rpc.Status reason for malformed bodies, 413 for bodies
over `max_body`, 415 for other content types, 503 (retryable) when `max_concurrent` bodies are
already being read for longer than `busy_timeout_s`.

Memory is bounded: decoded spans wait in a queue of at most `max_queue` spans for the writer
thread, which stores them in batches. When the queue is full, spans are dropped and counted
(`spans_dropped`, also added to the store's meta key "otlp.spans_dropped").
"""

from __future__ import annotations

import json
import logging
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from ..ingest.redact import Redactor
from ..store import Store
from .otlp import Decoded, decode_json, decode_protobuf
from .writer import SpanWriter

log = logging.getLogger(__name__)

DROPPED_META_KEY = "otlp.spans_dropped"
PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_GRPC_INVALID_ARGUMENT = 3
_GRPC_RESOURCE_EXHAUSTED = 8
_GRPC_UNAVAILABLE = 14
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _BadChunk(ValueError):
    """A chunked request body that does not follow HTTP/1.1's framing."""


class OtlpReceiver:
    """An OTLP/HTTP server storing the spans it receives. `.start()`, `.stop()`, `.port`."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 4318,
                 max_body: int = 8 * 1024 * 1024, *, max_queue: int = 100_000,
                 batch_size: int = 2_000, flush_interval_s: float = 0.2,
                 max_concurrent: int = 4, busy_timeout_s: float = 5.0,
                 redactor: Redactor | None = None) -> None:
        if min(max_body, max_queue, batch_size, max_concurrent) < 1:
            raise ValueError("expected max_body, max_queue, batch_size and max_concurrent >= 1, "
                             f"got {max_body!r}, {max_queue!r}, {batch_size!r}, "
                             f"{max_concurrent!r}")
        self.store = store
        self.host = host
        self._requested_port = port
        self.max_body = max_body
        # At most max_concurrent bodies are read and decoded at once (memory bound); a request
        # waiting longer than busy_timeout_s for a slot gets 503, which exporters retry.
        self.max_concurrent = max_concurrent
        self.busy_timeout_s = busy_timeout_s
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.writer = SpanWriter(store, origin="otlp", dropped_meta_key=DROPPED_META_KEY,
                                 max_queue=max_queue, batch_size=batch_size,
                                 flush_interval_s=flush_interval_s, redactor=redactor)
        self.spans_received = 0
        self.spans_rejected = 0
        self._count_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def start(self) -> OtlpReceiver:
        if self._server is not None:
            raise RuntimeError("expected a stopped OtlpReceiver, got one already running")
        self._server = ThreadingHTTPServer((self.host, self._requested_port), _handler(self))
        self._server.daemon_threads = True
        self.writer.start()
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="choreoscope-otlp-http", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, store what is queued, stop the writer."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.writer.stop(timeout_s)
        self._server = None
        self._thread = None

    @property
    def spans_stored(self) -> int:
        return self.writer.spans_stored

    @property
    def spans_dropped(self) -> int:
        """Spans lost: queue full, or the store refused them."""
        return self.writer.spans_dropped

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every received span is stored; False on timeout."""
        return self.writer.flush(timeout_s)

    def accept(self, decoded: Decoded) -> int:
        """Queue decoded spans; returns how many were dropped because the queue is full."""
        with self._count_lock:
            self.spans_received += len(decoded.spans)
            self.spans_rejected += decoded.rejected
        return self.writer.offer(decoded.spans)


def _handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds a client may stall mid-request before its thread is freed
        disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall
        server_version = "choreoscope-otlp"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("otlp %s " + format, self.client_address[0], *args)

        def do_GET(self) -> None:
            self._status_only(405 if self.path.split("?")[0] == PATH else 404)

        def do_POST(self) -> None:
            if self.path.split("?")[0] != PATH:
                self._status_only(404)
                return
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            is_json = ctype == _JSON
            if ctype not in (_PROTOBUF, _JSON):
                self._error(415, f"expected Content-Type {_PROTOBUF} or {_JSON}, got "
                                 f"{ctype or 'none'!r}", is_json, close=True)
                return
            if not receiver._slots.acquire(timeout=receiver.busy_timeout_s):
                self._error(503, f"receiver busy: {receiver.max_concurrent} requests in "
                                 "progress, retry later", is_json, close=True)
                return
            try:
                decoded = self._decode(is_json)
            finally:
                receiver._slots.release()
            if decoded is None:
                return
            dropped = receiver.accept(decoded)
            rejected = decoded.rejected + dropped
            message = "; ".join(decoded.reasons[:3])
            if dropped:
                message = (f"{dropped} spans dropped: receiver queue full"
                           + (f"; {message}" if message else ""))
            self._ok(is_json, rejected, message)

        def _decode(self, is_json: bool) -> Decoded | None:
            try:
                body = self._body(is_json)
            except (TimeoutError, ConnectionError) as exc:
                log.debug("otlp client %s went away mid-body: %s", self.client_address[0], exc)
                self.close_connection = True
                return None
            if body is None:
                return None
            try:
                return decode_json(json.loads(body)) if is_json else decode_protobuf(body)
            except Exception as exc:  # noqa: BLE001 - malformed input of any shape: a 400
                self._error(400, f"malformed OTLP {'JSON' if is_json else 'protobuf'} "
                                 f"body: {exc}", is_json)
                return None

        # --- body ----------------------------------------------------------------------------

        def _body(self, is_json: bool) -> bytes | None:
            limit = receiver.max_body
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                try:
                    raw = self._read_chunked(limit)
                except _BadChunk as exc:
                    self._error(400, f"malformed chunked body: {exc}", is_json, close=True)
                    return None
                if raw is None:
                    self._error(413, f"body over {limit} bytes", is_json, close=True)
                    return None
            else:
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._error(411, "expected a Content-Length header", is_json, close=True)
                    return None
                if length < 0:
                    self._error(400, f"expected a Content-Length >= 0, got {length}", is_json,
                                close=True)
                    return None
                if length > limit:
                    self._error(413, f"body of {length} bytes over the limit of {limit}",
                                is_json, close=True)
                    return None
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client closed its side before the whole body
                    raise ConnectionResetError(f"body ended after {len(raw)} of {length} bytes")
            encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding == "gzip":
                return self._gunzip(raw, limit, is_json)
            if encoding != "identity":
                self._error(415, f"expected Content-Encoding gzip or identity, got {encoding!r}",
                            is_json)
                return None
            return raw

        def _gunzip(self, raw: bytes, limit: int, is_json: bool) -> bytes | None:
            """The inflated body, every gzip member of it in turn (RFC 1952 allows several);
            None, answered, when it is malformed or inflates beyond `limit`."""
            out: list[bytes] = []
            size = 0
            rest = raw
            while True:
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                try:
                    part = inflater.decompress(rest, limit + 1 - size)
                except zlib.error as exc:
                    self._error(400, f"malformed gzip body: {exc}", is_json)
                    return None
                size += len(part)
                if size > limit or inflater.unconsumed_tail:
                    self._error(413, f"decompressed body over the limit of {limit} bytes",
                                is_json)
                    return None
                if not inflater.eof:  # what is there inflates, but the stream never ends
                    self._error(400, f"malformed gzip body: truncated (the gzip stream stops "
                                     f"after {len(raw)} bytes, before its end)", is_json)
                    return None
                out.append(part)
                rest = inflater.unused_data
                if not rest:
                    return b"".join(out)

        def _read_chunked(self, limit: int) -> bytes | None:
            """The body of a chunked request; None when it grows over `limit`; _BadChunk
            when a size line or a chunk's end is not what HTTP/1.1 says."""
            parts: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionResetError(f"body ended after {size} bytes of chunks")
                text = line.split(b";")[0].strip()
                if not _HEX.fullmatch(text):
                    raise _BadChunk(f"expected a chunk size in hexadecimal, got {text[:40]!r}")
                n = int(text, 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailer fields
                    return b"".join(parts)
                size += n
                if size > limit:
                    return None
                chunk = self.rfile.read(n)
                if len(chunk) < n:
                    raise ConnectionResetError(f"chunk ended after {len(chunk)} of {n} bytes")
                parts.append(chunk)
                if self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                    raise _BadChunk(f"a chunk of {n} bytes is not followed by a line end")

        # --- responses -------------------------------------------------------------------------

        def _ok(self, is_json: bool, rejected: int, message: str) -> None:
            if is_json:
                body: dict[str, Any] = {}
                if rejected:
                    body["partialSuccess"] = {"rejectedSpans": str(rejected),
                                              "errorMessage": message}
                self._send(200, json.dumps(body).encode(), _JSON)
                return
            response = ExportTraceServiceResponse()
            if rejected:
                response.partial_success.CopyFrom(
                    ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
            self._send(200, response.SerializeToString(), _PROTOBUF)

        def _error(self, status: int, message: str, is_json: bool, close: bool = False) -> None:
            code = {413: _GRPC_RESOURCE_EXHAUSTED, 503: _GRPC_UNAVAILABLE}.get(
                status, _GRPC_INVALID_ARGUMENT)
            if is_json:
                body = json.dumps({"code": code, "message": message}).encode()
                ctype = _JSON
            else:
                body = _status_proto(code, message)
                ctype = _PROTOBUF
            if close:
                self.close_connection = True
            self._send(status, body, ctype)

        def _status_only(self, status: int) -> None:
            self.close_connection = True
            self._send(status, b"", "text/plain")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
            except (TimeoutError, ConnectionError) as exc:  # nobody left to answer
                log.debug("otlp client %s went away before the answer: %s",
                          self.client_address[0], exc)
                self.close_connection = True

    return Handler


def _status_proto(code: int, message: str) -> bytes:
    """A google.rpc.Status {code, message} in protobuf wire format."""
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
