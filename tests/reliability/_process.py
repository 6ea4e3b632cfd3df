"""Stopping a collector process a test started (test helper)."""

from __future__ import annotations

import signal
import subprocess


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM `proc` if it still runs and give it 60 s to shut down cleanly; kill it after
    that (its return code then is not 0, which the test's own assertion reports)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
