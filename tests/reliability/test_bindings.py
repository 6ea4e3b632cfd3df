"""Network exposure: the OTLP receiver and the metrics endpoint listen on 127.0.0.1 unless an
address is given explicitly; request bodies over 8 MiB get 413 before being read."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from choreoscope.collector.broker import free_port
from choreoscope.collector.cli import build_parser
from tests.conftest import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.reliability._process import stop

pytestmark = pytest.mark.broker
MIB = 1024 * 1024


def _listening(port: int) -> set[str]:
    """Local addresses (IPv4, as dotted quads) listening on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def _collector(bootstrap: str, topic: str, group: str, tmp_path: Path, *extra: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int, int, Path]:
    otlp, prom = free_port(), free_port()
    log = tmp_path / f"collector-{otlp}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.collector.cli", "--store",
         f"sqlite:///{tmp_path}/bind.db", "collect", "--bootstrap", bootstrap, "--topics",
         f"^{topic}$", "--group", group, "--otlp-port", str(otlp), "--metrics-port", str(prom),
         "--kafka-option", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
         "--kafka-option", f"heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}", *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    deadline = time.monotonic() + 60
    while not (_listening(otlp) and _listening(prom)):
        assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
        time.sleep(0.1)
    return proc, otlp, prom, log


def _post(port: int, body: bytes | None, length: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/traces")
        conn.putheader("Content-Type", "application/x-protobuf")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        if body:
            # the server may answer and close before reading it all
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(body)
        return conn.getresponse().status
    finally:
        conn.close()


def test_defaults_bind_loopback_and_limit_bodies(bootstrap, topic, group, tmp_path) -> None:
    """Without options both listen on 127.0.0.1 only; 8 MiB passes the limit, one byte more is 413."""
    proc, otlp, prom, log = _collector(bootstrap, topic, group, tmp_path)
    try:
        assert (_listening(otlp), _listening(prom)) == ({"127.0.0.1"}, {"127.0.0.1"})
        assert _post(otlp, None, 8 * MIB + 1) == 413  # refused on the header alone
        assert _post(otlp, None, 1 << 40) == 413
        assert _post(otlp, b"\x00" * (8 * MIB + 1), 8 * MIB + 1) == 413
        assert _post(otlp, b"\xff" * (8 * MIB), 8 * MIB) == 400  # at the limit: read, malformed
        assert proc.poll() is None
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]


def test_other_addresses_only_when_asked(bootstrap, topic, group, tmp_path) -> None:
    """--otlp-host/--metrics-host (or their environment variables) bind another address."""
    proc, otlp, prom, _log = _collector(bootstrap, topic, group, tmp_path,
                                       "--otlp-host", "0.0.0.0", "--metrics-host", "0.0.0.0")
    try:
        assert (_listening(otlp), _listening(prom)) == ({"0.0.0.0"}, {"0.0.0.0"})
    finally:
        stop(proc)
    env = {**os.environ, "CHOREOSCOPE_OTLP_HOST": "0.0.0.0"}
    proc, otlp, prom, _log = _collector(bootstrap, topic, group, tmp_path, env=env)
    try:
        assert (_listening(otlp), _listening(prom)) == ({"0.0.0.0"}, {"127.0.0.1"})
    finally:
        stop(proc)


def test_dashboard_listens_on_loopback_by_default() -> None:
    """`choreoscope dashboard` defaults to 127.0.0.1; another address needs --host."""
    parser = build_parser()
    assert parser.parse_args(["dashboard"]).host == "127.0.0.1"
    assert parser.parse_args(["dashboard", "--host", "0.0.0.0"]).host == "0.0.0.0"
