"""OAuth error values shared by the authorization and token endpoints."""

from __future__ import annotations

import re

# RFC 6749 §4.1.2.1 and §5.2 limit error_description to these characters.
_NOT_DESCRIPTION_CHARS = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")
MAX_DESCRIPTION_LENGTH = 300


def error_description(text: str) -> str:
    """`text` made safe for error_description: other characters become spaces."""
    return _NOT_DESCRIPTION_CHARS.sub(" ", text)[:MAX_DESCRIPTION_LENGTH]


class OAuthRequestError(Exception):
    """An RFC 6749 §5.2 error found before the core was called."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
