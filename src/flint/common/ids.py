"""Prefixed, time-sortable ids (`app_01jf…`): a ULID in lower case behind a type prefix."""

from __future__ import annotations

from ulid import ULID

# Every id prefix in one place, so two resources never share one.
PREFIXES = frozenset(
    {
        "mer",  # merchant
        "par",  # partner
        "key",  # API key (admin, merchant secret key, partner key)
        "app",
        "ins",
        "ord",
        "cs",
        "plink",
        "in",
        "re",
        "py",
        "evt",
        "we",
        "del",
        "chg",
        "att",  # a payment attempt
        "aur",  # app usage record
        "ain",  # app invoice (the platform billing a merchant for an app)
        "dev",  # a browser trusted to sign in to one merchant account
    }
)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{str(ULID()).lower()}"
