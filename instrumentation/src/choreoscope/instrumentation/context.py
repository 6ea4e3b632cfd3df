"""The event being handled, carried in a context variable.

Inside a `traced_consumer` handler, `current_event()` is the event being handled; every
publish through an instrumented producer reads it to inherit the correlation id, set the
causation id and continue the trace (the OpenTelemetry context travels in contextvars too).

Threads do not inherit context variables. `carry_context(fn)` wraps a callable so that it runs
in a copy of the caller's context, handled event and span included:

    executor.submit(carry_context(send_receipt), order)
    threading.Thread(target=carry_context(worker)).start()
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from .errors import UsageError
from .event import Event

P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "choreoscope_current_event", default=None
)


def current_event() -> Event | None:
    """The event whose handler is running, or None outside a handler."""
    return _current.get()


@contextmanager
def handling(event: Event) -> Iterator[Event]:
    """Make `event` the current event for the duration of the block."""
    token = _current.set(event)
    try:
        yield event
    finally:
        _current.reset(token)


def carry_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap `fn` to run in a copy of the current context (for threads and executors)."""
    if not callable(fn):
        raise UsageError(f"expected a function to carry the context into, got {fn!r}")
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run
