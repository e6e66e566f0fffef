"""Runtime settings, read from the environment once."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///./flint.db"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Settings:
    database_url: str
    # Where browsers and plugins reach Flint (Envoy); the OAuth issuer.
    public_url: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("FLINT_DATABASE_URL", DEFAULT_DATABASE_URL),
            public_url=os.environ.get("FLINT_PUBLIC_URL", DEFAULT_PUBLIC_URL).rstrip("/"),
        )
