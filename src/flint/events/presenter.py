"""Events as readers see them: the same JSON in webhooks, the list and the stream.

A cursor is the event's global position plus a short MAC binding it to the
reader, so a forged cursor, or one taken from another tenant's stream, is
refused instead of silently reading from some other position."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2
from sqlalchemy.orm import Session

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.common.auth import Principal, PrincipalKind
from flint.common.errors import invalid_argument
from flint.common.events import EventRecord
from flint.common.platform_keys import PAGE_TOKEN_KEY, platform_key
from flint.events.v1 import events_service_pb2 as pb
from flint.server.convert import ENVIRONMENT_ENUMS, timestamp

ENVIRONMENTS = ENVIRONMENT_ENUMS


@dataclass(frozen=True)
class Reader:
    """Whose view of the event log: a merchant's environment, or one install's."""

    merchant_id: str
    environment: str
    install_id: str = ""
    scopes: frozenset[str] = frozenset()
    app_id: str = ""

    @property
    def key(self) -> str:
        if self.install_id:
            return f"app:{self.install_id}:{self.environment}"
        return f"merchant:{self.merchant_id}:{self.environment}"

    @classmethod
    def of(cls, principal: Principal) -> Reader:
        if principal.kind is PrincipalKind.APP:
            return cls(
                principal.merchant,
                principal.environment,
                principal.id,
                principal.scopes,
                principal.app_id,
            )
        return cls(principal.merchant, principal.environment)


def cursor_key(session: Session) -> bytes:
    return platform_key(session, PAGE_TOKEN_KEY)


def _mac(key: bytes, reader: Reader, position: int) -> str:
    digest = hmac.new(key, f"cursor:{reader.key}:{position}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


def cursor_token(key: bytes, reader: Reader, position: int) -> str:
    return f"{position}.{_mac(key, reader, position)}"


def parse_cursor(key: bytes, reader: Reader, token: str, fld: str) -> int:
    position_text, _, mac = token.partition(".")
    if not position_text.isdigit() or not hmac.compare_digest(
        mac, _mac(key, reader, int(position_text))
    ):
        raise invalid_argument(fld, "CURSOR_INVALID", "is not a cursor of this reader's events")
    return int(position_text)


def event_pb(key: bytes, event: EventRecord, reader: Reader) -> pb.Event:
    data = struct_pb2.Struct()
    data.update({"object": event.data})
    return pb.Event(
        id=event.id,
        type=event.type,
        created=timestamp(event.created_at),
        environment=ENVIRONMENTS.get(event.environment, accounts_pb.ENVIRONMENT_UNSPECIFIED),
        merchant_id=event.merchant_id,
        cursor=cursor_token(key, reader, event.cursor or 0),
        object_version=event.object_version,
        object_type=event.object_type,
        object_id=event.object_id,
        data=data,
    )


def event_json(session: Session, event: EventRecord, reader: Reader) -> dict[str, Any]:
    """The event as JSON, exactly as the REST API shows it to `reader`."""
    return json_format.MessageToDict(
        event_pb(cursor_key(session), event, reader), preserving_proto_field_name=True
    )
