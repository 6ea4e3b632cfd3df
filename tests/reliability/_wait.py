"""Waiting for a condition in a reliability test (test helper)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, check: Callable[[], Any], limit_s: float = 90.0, *,
             ignoring: tuple[type[BaseException], ...] = ()) -> None:
    """Poll `check` every 0.2 s until it returns something true; fail the test with `what`
    after `limit_s`. Exceptions of the `ignoring` types count as "not yet" (a store or an
    endpoint still coming up)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ignoring:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
