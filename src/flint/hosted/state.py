"""What every handler reaches through the request: settings, the core client,
sessions, templates, and the fields of the request's log line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jinja2
from starlette.requests import Request

from flint.hosted.core import Core
from flint.hosted.sessions import Sessions
from flint.hosted.settings import HostedSettings

LOG_FIELDS_KEY = "flint.log_fields"


@dataclass
class Hosted:
    settings: HostedSettings
    sessions: Sessions
    templates: jinja2.Environment
    # Opened by the lifespan; None before start-up and after shutdown.
    core_client: Core | None = field(default=None)

    @property
    def core(self) -> Core:
        if self.core_client is None:
            raise RuntimeError("the hosted app is not started: the core client is closed")
        return self.core_client


def hosted(request: Request) -> Hosted:
    state: Hosted = request.app.state.hosted
    return state


def request_id(request: Request) -> str:
    """Envoy's x-request-id, passed to the core so both log lines match."""
    return request.headers.get("x-request-id", "")[:128]


def log_fields(request: Request) -> dict[str, Any]:
    """Extra fields for this request's log line (reasons, never secrets)."""
    fields: dict[str, Any] = request.scope.setdefault(LOG_FIELDS_KEY, {})
    return fields
