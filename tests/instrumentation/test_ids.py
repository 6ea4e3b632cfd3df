"""new_event_id: UUIDv7 strings, unique and sorted in creation order."""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest

from choreoscope.instrumentation import ids
from choreoscope.instrumentation.ids import new_event_id

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuidv7_layout() -> None:
    """Ids are canonical lowercase UUIDs with version 7, the RFC variant and the current time."""
    before = time.time_ns() // 1_000_000
    value = new_event_id()
    after = time.time_ns() // 1_000_000
    assert CANONICAL.fullmatch(value), value
    parsed = uuid.UUID(value)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert before <= parsed.int >> 80 <= after + 1


def test_monotonic_and_unique() -> None:
    """Ids made one after another sort in creation order and never repeat."""
    made = [new_event_id() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_monotonic_when_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that steps back, or stands still, still gives increasing ids."""
    clock = iter([2_000_000_000_000, 1_000_000_000_000] + [1_500_000_000_000] * 5000)
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock) * 1_000_000)
    made = [new_event_id() for _ in range(5002)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(m).version == 7 for m in made)


def test_unique_across_threads() -> None:
    """Ids made concurrently in several threads never collide."""
    out: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(new_event_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(into,)) for into in out]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [i for into in out for i in into]
    assert len(set(flat)) == 20_000
    assert all(into == sorted(into) for into in out)
