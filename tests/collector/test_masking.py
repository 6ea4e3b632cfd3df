"""store/masking.py: the one place passwords are hidden for logs, commands and the dashboard."""

from __future__ import annotations

import pytest

from choreoscope.collector.store.masking import mask_secrets, mask_url


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://billing:s3cret@db.internal:5432/billing",
     "postgresql://billing:***@db.internal:5432/billing"),
    ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("sqlite:///x.db", "sqlite:///x.db"),
    # Not parseable as a URL (a port that is not a number): masked as text.
    ("postgresql://u:s3cret@h:5432:bad/db", "postgresql://u:***@h:5432:bad/db"),
    # Not parseable, and the `@` is not one of user:password@: only the scheme is shown.
    ("weird:s3cret@h", "weird:..."),
    ("no-url-at-all", "no-url-at-all"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_mask_url_of_something_that_is_not_text() -> None:
    assert mask_url(42) == "42"


@pytest.mark.parametrize(("text", "shown"), [
    ("could not connect to postgresql://u:s3cret@h/db: refused",
     "could not connect to postgresql://u:***@h/db: refused"),
    ("a postgresql://a:x@h/1 and mysql://b:y@h/2", "a postgresql://a:***@h/1 and mysql://b:***@h/2"),
    # A password holding `/`, `:` and `@` is hidden whole.
    ("postgresql://u:p/a:s@s@h/db", "postgresql://u:***@h/db"),
    ("billing=postgresql://u:s3cret@h/db#outbox", "billing=postgresql://u:***@h/db#outbox"),
    ("nothing secret here", "nothing secret here"),
])
def test_mask_secrets(text: str, shown: str) -> None:
    assert mask_secrets(text) == shown


def test_mask_secrets_of_none() -> None:
    assert mask_secrets(None) is None
