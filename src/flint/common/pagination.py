"""AIP-158 pagination: page_size rules and opaque page tokens.

A page token is the id after which the next page starts, encrypted and
authenticated (Fernet) together with the list it belongs to, so a token cannot
be read, forged, or replayed against another list or tenant.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from flint.common.errors import invalid_argument
from flint.common.platform_keys import PAGE_TOKEN_KEY, platform_key


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=_HasId)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Page:
    size: int
    # Id of the last item of the previous page; None for the first page.
    after: str | None
    # What the token is bound to: the list and everything that scopes or filters it.
    context: str


def _fernet(session: Session) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(platform_key(session, PAGE_TOKEN_KEY)))


def parse_page(session: Session, page_size: int, page_token: str, *, context: str) -> Page:
    if page_size < 0:
        raise invalid_argument("page_size", "INVALID_PAGE_SIZE", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return Page(size, None, context)
    try:
        payload = json.loads(_fernet(session).decrypt(page_token.encode()))
    except (InvalidToken, ValueError, UnicodeError):
        raise invalid_argument(
            "page_token", "INVALID_PAGE_TOKEN", "is not a token returned by this list"
        ) from None
    if payload.get("c") != context or not isinstance(payload.get("a"), str):
        raise invalid_argument(
            "page_token", "INVALID_PAGE_TOKEN", "is not a token returned by this list"
        )
    return Page(size, payload["a"], context)


def next_page_token(session: Session, page: Page, last_id: str) -> str:
    payload = json.dumps({"c": page.context, "a": last_id}, separators=(",", ":"))
    return _fernet(session).encrypt(payload.encode()).decode()


def fetch_page(
    session: Session, query: Select[T], id_column: InstrumentedAttribute[Any], page: Page
) -> tuple[list[T], str]:
    """Runs `query` newest first (ids are time-sortable) from the page's position;
    returns the items and the next page token ("" at the end)."""
    if page.after is not None:
        query = query.where(id_column < page.after)
    rows = list(session.scalars(query.order_by(id_column.desc()).limit(page.size + 1)))
    if len(rows) <= page.size:
        return rows, ""
    rows = rows[: page.size]
    return rows, next_page_token(session, page, rows[-1].id)
