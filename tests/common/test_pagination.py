from __future__ import annotations

import pytest

from flint.common.db import Database
from flint.common.errors import FlintError
from flint.common.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    next_page_token,
    parse_page,
)


def test_page_size_defaults_and_is_capped(db: Database):
    with db.read() as session:
        assert parse_page(session, 0, "", context="x").size == DEFAULT_PAGE_SIZE
        assert parse_page(session, 7, "", context="x").size == 7
        assert parse_page(session, 10_000, "", context="x").size == MAX_PAGE_SIZE


def test_token_round_trips_and_is_opaque(db: Database):
    with db.read() as session:
        page = parse_page(session, 5, "", context="apps:par_1")
        token = next_page_token(session, page, "app_01abc")
        assert "app_01abc" not in token
        assert "par_1" not in token
        assert parse_page(session, 5, token, context="apps:par_1").after == "app_01abc"


@pytest.mark.parametrize("tamper", ["flip", "truncate", "other-context"])
def test_tampered_or_foreign_tokens_are_refused(db: Database, tamper):
    with db.read() as session:
        token = next_page_token(session, parse_page(session, 5, "", context="a"), "app_1")
        context = "a"
        if tamper == "flip":
            token = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
        elif tamper == "truncate":
            token = token[: len(token) // 2]
        else:
            context = "b"
        with pytest.raises(FlintError) as caught:
            parse_page(session, 5, token, context=context)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.violations[0].field == "page_token"
