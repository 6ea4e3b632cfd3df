"""Soft validation of event type names: the last word should be in the past tense.

Events state facts that happened (`order.placed`, `PaymentFailed`), commands ask for
something to happen (`order.place`, `SendEmail`). The check is a heuristic: regular `-ed`
forms, a list of irregular participles, phrasal verbs (`user.signed_up`), states reached
(`inventory.out_of_stock`), and a trailing version (`order.placed.v2`) is ignored.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Irregular past forms commonly used in event names.
_IRREGULAR = frozenset(
    """
    sent paid built bought brought caught chosen done drawn driven eaten fallen felt found
    forgotten given gone got gotten grown held hidden hit hung kept known laid led left lent
    lost made meant met overridden overtaken put quit read rebuilt redone reset resent ridden
    rung risen run said seen sold set shaken shed shown shut slept spent split spoken
    spread stood stolen struck sung sunk taken taught thrown told thought undone understood
    upheld withdrawn won written withheld begun became become broken
    fed fled bled bred sped dealt dug drunk flown frozen hurt cast cost bound bent burnt
    fought forbidden forgiven heard lit mistaken shot stuck swept swung torn woken worn
    wound wrote began broke chose drove gave took rode rose spoke stole threw bid rebid
    upset outbid overpaid prepaid repaid resold withdrew forgot froze shook
    """.split()
)
# Words ending in -eed that are past forms; the others (need, feed, proceed) are not.
_EED_PAST = frozenset("agreed freed guaranteed decreed refereed disagreed".split())
_PARTICLES = frozenset("up out in off on down over back away through".split())
# A state reached is a fact too: `inventory.out_of_stock`, `product.back_in_stock`.
_STATE_PHRASES = frozenset({("out", "of"), ("back", "in")})
_VERSION = re.compile(r"v?[0-9]+")
_SPLIT = re.compile(r"[.\-_:/\s]|(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=4096)
def is_past_tense(event_type: str) -> bool:
    """Whether the last word of a dotted or CamelCase event type reads as past tense.

    `order.placed`, `PaymentFailed`, `payment.sent`, `user.signed_up`, `order.placed.v2`
    -> True; `order.place`, `SendEmail`, `user.feed` -> False.
    """
    words = [w.lower() for w in _SPLIT.split(event_type) if w]
    while words and _VERSION.fullmatch(words[-1]):
        words.pop()
    if len(words) >= 3 and tuple(words[-3:-1]) in _STATE_PHRASES:
        return True
    if len(words) >= 2 and words[-1] in _PARTICLES:
        words.pop()
    return bool(words) and _past(words[-1])


def _past(word: str) -> bool:
    if word in _IRREGULAR:
        return True
    if word.endswith("eed"):
        return word in _EED_PAST
    return len(word) > 3 and word.endswith("ed")
