"""Event ids: UUIDv7 strings (time-ordered, RFC 9562).

Layout: 48 bits of Unix milliseconds, version `7`, a 12-bit counter (ids made in the same
millisecond stay in creation order), the RFC variant and 62 random bits. The text is put
together from hex pieces: the millisecond part once per millisecond, the random part
sliced from a pool of random hex digits.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_prefix = ""  # "xxxxxxxx-xxxx-" for _last_ms
# Random hex digits come from one os.urandom call per 512 ids: the call releases the GIL, and
# on a busy producer thread every release can cost a whole thread switch interval.
_POOL_DIGITS = 8192
_ID_DIGITS = 16  # 1 for the variant (2 random bits) + 15 random digits (60 bits)
_pool = ""
_pool_at = _POOL_DIGITS
# First digit of the fourth group: the variant bits `10` then two random bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}


def _forget_pool() -> None:
    """A forked child must not reuse the parent's random bits."""
    global _pool, _pool_at
    _pool, _pool_at = "", _POOL_DIGITS


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def new_event_id() -> str:
    """A fresh UUIDv7 string; ids made in one process sort in creation order."""
    global _last_ms, _counter, _prefix, _pool, _pool_at
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
        if ms != _last_ms or not _prefix:
            digits = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
            _prefix = f"{digits[:8]}-{digits[8:]}-"
            _last_ms = ms
        counter, prefix = _counter, _prefix
        if _pool_at >= _POOL_DIGITS:
            _pool, _pool_at = os.urandom(_POOL_DIGITS // 2).hex(), 0
        rand = _pool[_pool_at : _pool_at + _ID_DIGITS]
        _pool_at += _ID_DIGITS
    return f"{prefix}7{counter:03x}-{_VARIANT[rand[0]]}{rand[1:4]}-{rand[4:]}"
