"""Strict W3C Trace Context `tracestate` validation.

https://www.w3.org/TR/trace-context/#tracestate-header: a comma-separated list of at most 32
`key=value` members, optional spaces and tabs around each, empty members allowed. A key is
`lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")` or, multi-tenant,
`tenant@system` (tenant: a lowercase letter or digit and up to 240 more, system: a lowercase
letter and up to 13 more); a key appears once. A value is 1 to 256 printable ASCII
characters other than `,` and `=`, not ending in a space.

A list that breaks any of these is discarded as a whole (the spec: a vendor that cannot
parse it must not propagate it); the `traceparent` beside it is kept.
"""

from __future__ import annotations

import re

MAX_MEMBERS = 32
# The longest valid list: 32 members of a 256-character key, `=` and a 256-character value,
# joined by a comma with a space either side. Anything longer is rejected before parsing.
MAX_CHARS = MAX_MEMBERS * (256 + 1 + 256) + (MAX_MEMBERS - 1) * 3

_KEY = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}"
    r"|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
).fullmatch
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]").fullmatch


def tracestate_problem(value: str) -> str | None:
    """Why `value` is not a valid `tracestate` header value; None when it is."""
    if len(value) > MAX_CHARS:
        return f"{len(value)} characters, more than a valid list can have ({MAX_CHARS})"
    keys: set[str] = set()
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        key, equals, member_value = member.partition("=")
        if not equals:
            return f"list member {_shown(member)} is not key=value"
        if _KEY(key) is None:
            return f"{_shown(key)} is not a tracestate key"
        if _VALUE(member_value) is None:
            return f"the value of {_shown(key)} is not a tracestate value"
        if key in keys:
            return f"key {_shown(key)} appears twice"
        keys.add(key)
        if len(keys) > MAX_MEMBERS:
            return f"more than {MAX_MEMBERS} list members"
    return None


def _shown(text: str, limit: int = 40) -> str:
    """`text` quoted for a problem message, cut to `limit` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")
