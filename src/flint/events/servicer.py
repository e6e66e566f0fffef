"""gRPC EventsService: list, get, and the live stream."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc

from flint.common.auth import PrincipalKind
from flint.common.credentials import ApiKeyRecord
from flint.common.db import Database
from flint.common.events import EventRecord
from flint.events import catalog, presenter, service
from flint.events.hub import Hub
from flint.events.presenter import Reader
from flint.events.v1 import events_service_pb2 as pb
from flint.events.v1 import events_service_pb2_grpc as pb_grpc
from flint.installs import tokens
from flint.server.convert import timestamp
from flint.server.rpc import current_principal


class EventsServicer(pb_grpc.EventsServiceServicer):
    def __init__(self, db: Database, hub: Hub) -> None:
        self._db = db
        self._hub = hub
        self._messages = _StreamMessages()

    def ListEvents(self, request: pb.ListEventsRequest, context: Any) -> pb.ListEventsResponse:
        reader = Reader.of(current_principal())
        where = service.EventFilter(
            types=list(request.types),
            object_id=request.object_id,
            created_after=request.created_after.ToDatetime(tzinfo=UTC)
            if request.HasField("created_after")
            else None,
            created_before=request.created_before.ToDatetime(tzinfo=UTC)
            if request.HasField("created_before")
            else None,
        )
        with self._db.read() as session:
            events, next_cursor, has_more = service.list_events(
                session,
                reader,
                page_size=request.page_size,
                after=request.after,
                where=where,
                now=self._db.clock(),
            )
            key = presenter.cursor_key(session)
        return pb.ListEventsResponse(
            events=[presenter.event_pb(key, event, reader) for event in events],
            next_cursor=next_cursor,
            has_more=has_more,
        )

    def ListEventTypes(
        self, request: pb.ListEventTypesRequest, context: Any
    ) -> pb.ListEventTypesResponse:
        return pb.ListEventTypesResponse(
            event_types=[
                pb.EventTypeInfo(name=e.name, object_type=e.object_type, description=e.description)
                for e in catalog.CATALOG
            ]
        )

    def GetEvent(self, request: pb.GetEventRequest, context: Any) -> pb.Event:
        reader = Reader.of(current_principal())
        with self._db.read() as session:
            event = service.get_event(session, reader, request.id)
            return presenter.event_pb(presenter.cursor_key(session), event, reader)

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        principal = current_principal()
        reader = Reader.of(principal)
        heartbeat = service.heartbeat_seconds(request.heartbeat_seconds)
        key, position = await _start(self._db, reader, request.after)

        def still_allowed() -> bool:
            # Revoking the credential ends open streams too, within a heartbeat interval.
            with self._db.read() as session:
                if principal.kind is PrincipalKind.APP:
                    state = tokens.family_state(session, principal.credential_id)
                    return state is not None and state.active
                record = session.get(ApiKeyRecord, principal.credential_id)
                return record is not None and record.is_active(self._db.clock())

        async for item in self._hub.follow(
            reader, list(request.types), position, heartbeat, still_allowed, announce=True
        ):
            if isinstance(item, int):
                yield pb.StreamEventsResponse(
                    heartbeat=pb.Heartbeat(
                        time=timestamp(datetime.now(UTC)),
                        cursor=presenter.cursor_token(key, reader, item),
                    )
                )
                continue
            event = item
            yield self._messages.get(key, event, reader)
            if event.type == "install.uninstalled" and event.object_id == reader.install_id:
                return  # nothing more for this install


class _StreamMessages:
    """Each live event's stream message, built once per reader: every open
    stream of one install (or merchant environment) sends the same message, so
    a thousand of them cost one conversion, not a thousand. Recent events only
    (the hub hands them out in cursor order, all streams at about once)."""

    def __init__(self, size: int = 2048) -> None:
        self._size = size
        self._built: OrderedDict[tuple[bytes, str, Reader], pb.StreamEventsResponse] = OrderedDict()

    def get(self, key: bytes, event: EventRecord, reader: Reader) -> pb.StreamEventsResponse:
        found = self._built.get((key, event.id, reader))
        if found is None:
            found = pb.StreamEventsResponse(event=presenter.event_pb(key, event, reader))
            self._built[(key, event.id, reader)] = found
            if len(self._built) > self._size:
                self._built.popitem(last=False)
        return found


async def _start(db: Database, reader: Reader, after: str) -> tuple[bytes, int | None]:
    def load() -> tuple[bytes, int | None]:
        with db.read() as session:
            key = presenter.cursor_key(session)
            if not after:
                return key, None
            return key, service.start_position(session, reader, after, db.clock())

    return await asyncio.to_thread(load)
