"""A local HTTP server answering like Jaeger's query service, from fixture bytes (test helper)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[3] / ".." / "shared" / "fixtures" / "jaeger"

NOT_FOUND_V3 = b'{"error":{"httpCode":404,"message":"No traces found"}}\n'
NOT_FOUND_LEGACY = (b'{"data":null,"total":0,"limit":0,"offset":0,'
                    b'"errors":[{"code":404,"msg":"trace not found"}]}\n')
ROUTE_MISSING = b"404 page not found\n"  # Go's mux, for a route the server does not have


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str | None = "application/json"
    delay_s: float = 0.0
    drip_s: float = 0.0  # send the body a byte at a time, this long apart
    drip_head: bool = False  # ... and the status line and headers before it


class FakeJaeger:
    """Routes by path (query string ignored); unknown paths get Go's plain-text 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeJaeger:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                fake.authorizations.append(self.headers.get("Authorization"))
                reply = fake.routes.get(self.path.split("?")[0],
                                        Reply(404, ROUTE_MISSING, "text/plain; charset=utf-8"))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    if reply.drip_head:
                        head = (f"HTTP/1.1 {reply.status} OK\r\n"
                                f"Content-Length: {len(reply.body)}\r\n\r\n").encode()
                        for i in range(len(head)):
                            self.wfile.write(head[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.drip_s)
                        return
                    self.send_response(reply.status)
                    if reply.content_type:
                        self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if not reply.drip_s:
                        self.wfile.write(reply.body)
                    for i in range(len(reply.body)) if reply.drip_s else ():
                        self.wfile.write(reply.body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
