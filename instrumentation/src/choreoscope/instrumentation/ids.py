"""Event ids: UUIDv7 strings (time-ordered, RFC 9562)."""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Random bits come from one os.urandom call per 512 ids: the call releases the GIL, and on a
# busy producer thread every release can cost a whole thread switch interval.
_POOL_SIZE = 4096
_pool = b""
_pool_at = _POOL_SIZE


def _forget_pool() -> None:
    """A forked child must not reuse the parent's random bits."""
    global _pool, _pool_at
    _pool, _pool_at = b"", _POOL_SIZE


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def new_event_id() -> str:
    """A fresh UUIDv7 string; ids made in one process sort in creation order."""
    global _last_ms, _counter, _pool, _pool_at
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            # Same millisecond (or a clock step back): keep ids monotonic with a counter.
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        counter = _counter
        if _pool_at >= _POOL_SIZE:
            _pool, _pool_at = os.urandom(_POOL_SIZE), 0
        rand = int.from_bytes(_pool[_pool_at : _pool_at + 8], "big")
        _pool_at += 8
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | counter << 64
        | 0b10 << 62
        | rand & 0x3FFF_FFFF_FFFF_FFFF
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
