"""Texts made storable (store/text.py), shared by the events and the spans writers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from choreoscope.collector.store import Store
from choreoscope.collector.store.schema import meta
from choreoscope.collector.store.text import clean_text, clean_texts, without_surrogates


def test_clean_text_replaces_lone_surrogates_and_nul_only() -> None:
    assert clean_text("plain ascii") == "plain ascii"
    assert clean_text("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"  # valid: untouched
    assert clean_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert without_surrogates("a\x00\ud83d") == "a\x00\ufffd"  # NUL is left to clean_text


def test_clean_texts_copies_the_row_and_leaves_other_values() -> None:
    row = {"a": "x\x00", "b": 7, "c": None, "d": b"\x00"}
    assert clean_texts(row) == {"a": "x\ufffd", "b": 7, "c": None, "d": b"\x00"}
    assert row["a"] == "x\x00"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_cleaned_texts_are_accepted_by_the_store(kind, tmp_path, request) -> None:
    url = (f"sqlite:///{tmp_path}/s.db" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    store = Store(url).create()
    text = clean_text("x\x00y\ud800z")
    with store.engine.begin() as conn:
        conn.execute(meta.insert(), [{"key": "text", "value": text}])
    with store.engine.connect() as conn:
        assert conn.execute(select(meta.c.value).where(meta.c.key == "text")).scalar() == \
            "x\ufffdy\ufffdz"
    store.dispose()
