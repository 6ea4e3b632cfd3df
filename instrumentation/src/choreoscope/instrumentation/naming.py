"""Soft validation of event type names: the last segment should be in the past tense."""

from __future__ import annotations

import re
from functools import lru_cache

# Irregular past forms commonly used in event names.
_IRREGULAR = frozenset(
    """
    sent paid built bought brought caught chosen done drawn driven eaten fallen felt found
    forgotten given gone got gotten grown held hidden hit hung kept known laid led left lent
    lost made meant met overridden overtaken put quit read rebuilt redone reset resent ridden
    rung risen run said seen sold set shaken shed shown shut slept sold spent split spoken
    spread stood stolen struck sung sunk taken taught thrown told thought undone understood
    upheld withdrawn won written withheld begun became become broken
    """.split()
)
_SPLIT = re.compile(r"[.\-_:/]|(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=4096)
def is_past_tense(event_type: str) -> bool:
    """Whether the last word of a dotted or CamelCase event type reads as past tense.

    `order.placed`, `PaymentFailed`, `payment.sent` -> True; `order.place`, `SendEmail` -> False.
    """
    words = [w for w in _SPLIT.split(event_type) if w]
    if not words:
        return False
    last = words[-1].lower()
    return last.endswith("ed") or last in _IRREGULAR
