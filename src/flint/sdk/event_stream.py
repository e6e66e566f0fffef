"""Following `GET /v1/events:stream` (Server-Sent Events through Envoy) as an
iterator of typed events that survives disconnects.

Each SSE `data:` payload is a `StreamEventsResponse` in JSON: `{"event": …}` or
`{"heartbeat": {"time": …, "cursor": …}}`. The iterator remembers the cursor of
the last event or heartbeat, and after a cut connection (or a retryable error)
reconnects with backoff and `after=<that cursor>`, so nothing is skipped; event
ids already yielded are dropped, so nothing is yielded twice.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
from google.protobuf import json_format

from flint.events.v1.events_service_pb2 import Event, StreamEventsResponse
from flint.sdk._transport import ApiKey, RetryPolicy, Transport, retryable_status
from flint.sdk.errors import FlintError, error_class

STREAM_PATH = "/v1/events:stream"
# After this event of its own install an app's stream ends for good (its
# credentials stop working). A merchant sees it for every app and goes on.
FINAL_EVENT_TYPE = "install.uninstalled"
_REMEMBERED_IDS = 10_000


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data` payloads of a Server-Sent Events stream, one per event."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class EventStream(Iterator[Event]):
    """Live events, oldest first, from `after` (or from now when empty).

    `cursor` is the last cursor seen (an event's or a heartbeat's): persist it
    and pass it as `after` to resume in another process. `close()` ends it (from
    any thread); so does leaving a `with` block.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        after: str = "",
        types: Sequence[str] = (),
        heartbeat_seconds: int = 15,
        max_reconnects: int | None = None,
        reconnect: RetryPolicy | None = None,
        on_heartbeat: Callable[[str], None] | None = None,
    ) -> None:
        self._transport = transport
        credentials = transport.credentials
        # An app's stream shows only its own install's lifecycle events.
        self._app_stream = not (isinstance(credentials, ApiKey) and credentials.is_secret_key)
        self.cursor = after
        self.types = tuple(types)
        self.heartbeat_seconds = heartbeat_seconds
        self.max_reconnects = max_reconnects
        self.reconnect = reconnect or RetryPolicy(initial_delay=0.25, max_delay=10.0)
        self.on_heartbeat = on_heartbeat
        self.reconnects = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._closed = threading.Event()
        self._response: httpx.Response | None = None
        self._items = self._run()
        self._pending: list[Event] = []
        # Connect now, and wait until the server has subscribed (its first
        # heartbeat), so that an empty `after` ("from now") means from this call.
        first = next(self._items, None)
        if first is not None:
            self._pending.append(first)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        if self._pending:
            return self._pending.pop(0)
        while True:
            item = next(self._items)
            if item is not None:
                return item

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops the stream; a blocked `next()` ends with StopIteration."""
        self._closed.set()
        response = self._response
        if response is not None:
            response.close()

    def _params(self) -> list[tuple[str, str]]:
        params = [("heartbeat_seconds", str(self.heartbeat_seconds))]
        if self.cursor:
            params.append(("after", self.cursor))
        params.extend(("types", name) for name in self.types)
        return params

    def _timeout(self) -> httpx.Timeout:
        # No byte for two heartbeats means the connection is dead: reconnect.
        idle = max(self.heartbeat_seconds, 1) * 2 + 5
        return httpx.Timeout(10.0, read=float(idle))

    def _remember(self, event_id: str) -> bool:
        """True the first time an event id is seen."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > _REMEMBERED_IDS:
            self._seen.popitem(last=False)
        return True

    def _run(self) -> Iterator[Event | None]:
        """Events, and one None as soon as the first connection delivers anything."""
        failures = 0
        primed = False
        while not self._closed.is_set():
            try:
                with self._transport.stream(
                    STREAM_PATH, params=self._params(), timeout=self._timeout()
                ) as response:
                    self._response = response
                    for payload in sse_data(response.iter_lines()):
                        item = self._parse(payload)
                        failures = 0
                        if not primed:
                            primed = True
                            if not item.HasField("event"):
                                yield None
                        if item.HasField("heartbeat"):
                            if item.heartbeat.cursor:
                                self.cursor = item.heartbeat.cursor
                            if self.on_heartbeat is not None:
                                self.on_heartbeat(self.cursor)
                            continue
                        if not item.HasField("event"):
                            continue
                        event = item.event
                        if event.cursor:
                            self.cursor = event.cursor
                        if self._remember(event.id):
                            yield event
                        if event.type == FINAL_EVENT_TYPE and self._app_stream:
                            return
            except FlintError as error:
                if self._closed.is_set():
                    return
                if not (retryable_status(error) or error.status == 0):
                    raise
            except (httpx.TransportError, httpx.StreamError):
                if self._closed.is_set():
                    return
            finally:
                self._response = None
            if self._closed.is_set():
                return
            # The connection ended (cut, timed out or closed by the server): resume.
            if self.max_reconnects is not None and self.reconnects >= self.max_reconnects:
                raise FlintError("The event stream disconnected too often", status=0, code=14)
            self._closed.wait(self.reconnect.delay(failures))
            failures += 1
            self.reconnects += 1

    def _parse(self, payload: str) -> StreamEventsResponse:
        try:
            body: Any = json.loads(payload)
        except json.JSONDecodeError:
            raise FlintError(
                f"Unreadable stream data: {payload[:200]!r}", status=0, code=14
            ) from None
        # A gRPC error after the stream began can arrive as a Status object.
        if isinstance(body, dict) and "code" in body and "event" not in body:
            code = int(body.get("code", 2))
            status = {14: 503, 8: 429, 16: 401, 7: 403, 5: 404, 3: 400}.get(code, 500)
            raise error_class(status)(str(body.get("message", "")), status=status, code=code)
        return json_format.ParseDict(body, StreamEventsResponse(), ignore_unknown_fields=True)
