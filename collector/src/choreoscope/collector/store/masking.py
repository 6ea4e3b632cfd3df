"""Database URLs and error texts fit to show: every password replaced by `***`.

One place for it, used by the collector's logs, the query commands and the dashboard, so a
password never shows in one of them and not in another.
"""

from __future__ import annotations

import re
from typing import Any, overload

from sqlalchemy.engine import make_url

# `scheme://user:password@`; the password runs to the last `@` of a run without spaces, so a
# password holding `/`, `:` or `@` is hidden whole (an address after it may go with it).
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^\s]*@")


def mask_url(url: Any) -> str:
    """A database URL fit to show: its password replaced by `***`, the rest kept. Text that
    does not parse as a URL is masked as free text (`mask_secrets`); if it holds an `@` that
    is not part of a `scheme://user:password@`, only what comes before its first `:` is kept."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: still never show a password
        text = str(url)
        masked, found = _CREDENTIALS.subn(_masked, text)
        if not found and "@" in text:
            return text.split(":", 1)[0] + ":..."
        return masked


@overload
def mask_secrets(text: str) -> str: ...
@overload
def mask_secrets(text: None) -> None: ...
def mask_secrets(text: str | None) -> str | None:
    """Text (an error message, a log line) with every `scheme://user:password@` reduced to
    `scheme://user:***@`."""
    if text is None:
        return None
    return _CREDENTIALS.sub(_masked, str(text))


def _masked(credential: re.Match[str]) -> str:
    return f"{credential['scheme']}{credential['user']}:***@"
