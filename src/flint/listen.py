"""`flint listen`: forward a test-mode event stream to a local URL, signed.

Like `stripe listen`: it follows `GET /v1/events:stream` as a merchant's test
secret key or an app install's access token, and POSTs each event, signed per
Standard Webhooks with a local `whsec_` secret, to `--forward-to`, printing one
line per event with the local server's answer.

Delivery to the local URL is at least once. The stream position (the event's
cursor) is saved only after the forward attempt, so a listener stopped between
the two sends that event again on its next run. A forward that fails
(connection refused, timeout, an error status) is printed and not retried: the
position moves on, as after a 2xx.

State lives in the state directory (default `~/.flint/listen/`, mode 0700), each
file mode 0600: `secret` holds the local signing secret, created on first run;
`cursors/<sha256>` the last position per credential, named by the SHA-256 of a
test key, or of an access token's install (so a refreshed token resumes where
the previous one stopped). The credential itself is never stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import httpx
import jwt

from flint.common.config import Settings
from flint.webhooks import signing

DEFAULT_STATE_DIR = "~/.flint/listen"
API_KEY_ENV = "FLINT_API_KEY"
USER_AGENT = "Flint-Listen/1"
# Seconds between the server's heartbeats on an idle stream. "Ready!" is printed
# on the first item, so this also bounds how long start-up takes.
HEARTBEAT_SECONDS = 3
CONNECT_TIMEOUT_SECONDS = 10.0
FORWARD_TIMEOUT_SECONDS = 10.0
# Waits before reconnecting after consecutive failures; the last one repeats.
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

# google.rpc codes worth retrying: the server or the edge is unwell, not us.
_RETRYABLE_CODES = frozenset({2, 4, 8, 10, 13, 14})
_UNAUTHENTICATED = 16
_PERMISSION_DENIED = 7
_CODE_FOR_HTTP = {400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 409: 10, 429: 8, 504: 4}
_CURSOR_REASONS = frozenset({"CURSOR_INVALID", "CURSOR_EXPIRED"})


class ListenError(Exception):
    """Stops the listener: the message is for people, with this exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- options and credentials ----------------------------------------------------


@dataclass(frozen=True)
class ListenOptions:
    forward_to: str
    api_key: str = field(repr=False)
    api_url: str
    state_dir: Path
    event_types: tuple[str, ...] = ()
    from_now: bool = False
    print_secret: bool = False
    heartbeat_seconds: int = HEARTBEAT_SECONDS
    forward_timeout: float = FORWARD_TIMEOUT_SECONDS

    @classmethod
    def from_flags(
        cls,
        *,
        forward_to: str | None,
        api_key: str | None,
        api_url: str | None,
        events: str | None,
        state_dir: str,
        from_now: bool,
        print_secret: bool,
    ) -> ListenOptions:
        """The command's flags, with the environment's defaults filled in."""
        return cls(
            forward_to=forward_to or "",
            api_key=api_key or os.environ.get(API_KEY_ENV, ""),
            api_url=(api_url or Settings.from_env().public_url).rstrip("/"),
            state_dir=Path(state_dir).expanduser(),
            event_types=parse_event_types(events or ""),
            from_now=from_now,
            print_secret=print_secret,
        )


def parse_event_types(value: str) -> tuple[str, ...]:
    """`order.paid, refund.succeeded` → ('order.paid', 'refund.succeeded')."""
    return tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def check_url(value: str, flag: str) -> str:
    """An absolute http(s) URL, or a ListenError naming the flag."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as error:
        raise ListenError(f"{flag} {value!r} is not a URL ({error})", 2) from error
    if url.scheme not in ("http", "https") or not url.host:
        raise ListenError(f"{flag} must be an http:// or https:// URL, not {value!r}", 2)
    return value


@dataclass(frozen=True)
class Credential:
    token: str = field(repr=False)
    kind: str  # "merchant" (an sk_test_ key) or "app" (an access token)
    # Names this credential's saved position: a SHA-256, never the credential.
    state_key: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying it: the server verifies. They
    only tell the install (so a refreshed token resumes where the previous one
    stopped) and its environment (live is refused here, before any request)."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims


def parse_credential(value: str) -> Credential:
    token = value.strip()
    if not token:
        raise ListenError(
            "no API key: set FLINT_API_KEY to a merchant's test secret key (sk_test_…) "
            "or an app access token",
            2,
        )
    if token.startswith("sk_live_"):
        raise ListenError(
            "refusing a live secret key (sk_live_…): flint listen forwards test-mode "
            "events only. Use the merchant's test key (sk_test_…).",
            2,
        )
    if token.startswith("sk_test_"):
        return Credential(token, "merchant", _sha256(token))
    claims = _token_claims(token)
    if claims is None:
        raise ListenError(
            "the API key is neither a merchant test secret key (sk_test_…) nor an app access token",
            2,
        )
    environment = str(claims.get("env", ""))
    if environment == "live":
        raise ListenError(
            "refusing an access token of a live install: flint listen forwards "
            "test-mode events only. Install the app in test mode.",
            2,
        )
    install = str(claims.get("sub", ""))
    key = _sha256(f"install:{install}:{environment}") if install else _sha256(token)
    return Credential(token, "app", key)


# --- state ----------------------------------------------------------------------


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _write_private(path: Path, text: str) -> Path:
    """Writes a 0600 temporary file beside `path` and returns it (not yet in place)."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def load_secret(state_dir: Path) -> str:
    """The local signing secret, created on first use."""
    path = _private_dir(state_dir) / "secret"
    if not path.exists():
        staged = _write_private(path, signing.new_secret() + "\n")
        # link() refuses to replace: of two first runs at once, one secret wins.
        with contextlib.suppress(FileExistsError):
            os.link(staged, path)
        staged.unlink()
    secret = path.read_text().strip()
    if not secret.startswith(signing.SECRET_PREFIX):
        raise ListenError(f"{path} does not hold a whsec_ secret; remove it to make a new one")
    return secret


def _cursor_path(state_dir: Path, state_key: str) -> Path:
    return state_dir / "cursors" / state_key


def load_cursor(state_dir: Path, state_key: str) -> str | None:
    path = _cursor_path(state_dir, state_key)
    if not path.exists():
        return None
    cursor = str(json.loads(path.read_text()).get("cursor", ""))
    return cursor or None


def save_cursor(state_dir: Path, state_key: str, cursor: str) -> None:
    """Atomically: a stop mid-write leaves the previous position, never a torn file."""
    path = _cursor_path(state_dir, state_key)
    _private_dir(path.parent)
    os.replace(_write_private(path, json.dumps({"cursor": cursor}) + "\n"), path)


# --- the stream -----------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    id: str
    type: str
    cursor: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    cursor: str


@dataclass(frozen=True)
class ApiError:
    """A google.rpc.Status from the server or the edge."""

    code: int
    message: str
    reason: str = ""


StreamItem = StreamEvent | Heartbeat | ApiError


class StreamProtocolError(Exception):
    """The stream sent something that is not Flint's SSE: reconnect."""


def parse_status(text: str, http_status: int = 0) -> ApiError:
    """An error body as google.rpc.Status JSON, or the best reading of a non-JSON one."""
    fallback = _CODE_FOR_HTTP.get(http_status, 14 if http_status >= 500 else 2)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" not in body:
        return ApiError(fallback, text.strip()[:200] or f"HTTP {http_status}")
    reason = next(
        (
            str(detail.get("reason", ""))
            for detail in body.get("details", [])
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo")
        ),
        "",
    )
    return ApiError(int(body["code"]), str(body.get("message", "")), reason)


def _item(data: str) -> StreamItem | None:
    try:
        parsed = json.loads(data)
    except ValueError as error:
        raise StreamProtocolError(f"unreadable stream item: {data[:80]!r}") from error
    if not isinstance(parsed, dict):
        raise StreamProtocolError(f"unexpected stream item: {data[:80]!r}")
    if isinstance(parsed.get("event"), dict):
        event = parsed["event"]
        return StreamEvent(
            id=str(event.get("id", "")),
            type=str(event.get("type", "")),
            cursor=str(event.get("cursor", "")),
            body=event,
        )
    if isinstance(parsed.get("heartbeat"), dict):
        return Heartbeat(str(parsed["heartbeat"].get("cursor", "")))
    if "code" in parsed:
        return parse_status(data)
    return None  # an item kind this version does not know: skip it


def parse_stream(lines: Iterable[str]) -> Iterator[StreamItem]:
    """Server-Sent Events lines → events, heartbeats and errors. A failing call
    answers with a bare google.rpc.Status JSON body instead of `data:` lines."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                item = _item("\n".join(data))
                data = []
                if item is not None:
                    yield item
            continue
        if line.startswith("{"):
            yield parse_status(line)
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
        # Comments (":…") and other SSE fields (event, id, retry) carry nothing here.
    if data:
        item = _item("\n".join(data))
        if item is not None:
            yield item


def stream_params(cursor: str | None, event_types: Iterable[str], heartbeat: int) -> Any:
    params: list[tuple[str, str | int]] = [("heartbeat_seconds", heartbeat)]
    if cursor:
        params.append(("after", cursor))
    params.extend(("types", name) for name in event_types)
    return params


def _detail(error: ApiError) -> str:
    return f"{error.message} ({error.reason})" if error.reason else error.message


def refusal(error: ApiError, credential: Credential) -> str | None:
    """What to tell people when the server refuses for good; None: retry later."""
    if error.code in _RETRYABLE_CODES:
        return None
    detail = _detail(error)
    if error.code == _UNAUTHENTICATED:
        if credential.kind == "app":
            return (
                f"the app access token was refused: {detail}. It has expired (access "
                "tokens last an hour) or the install was revoked or uninstalled; "
                "get a fresh token and run flint listen again."
            )
        return (
            f"the API key was refused: {detail}. It was revoked or rotated; "
            "use the merchant's current test key (sk_test_…)."
        )
    if error.code == _PERMISSION_DENIED:
        return f"this credential may not read events: {detail}"
    if error.reason in _CURSOR_REASONS:
        return (
            f"the saved stream position was refused: {detail}. "
            "Run with --from-now to start from new events."
        )
    return f"the event stream refused the request: {detail}"


def backoff_seconds(failures: int) -> float:
    """The wait before reconnection attempt `failures` (0-based)."""
    return BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]


# --- forwarding and output ------------------------------------------------------


@dataclass(frozen=True)
class ForwardResult:
    status: int | None = None
    error: str = ""


def describe_transport_error(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(error)).strip()
    if not text:
        return type(error).__name__
    return text[0].lower() + text[1:]


def forward_body(event: StreamEvent) -> bytes:
    """The event as compact JSON, as Flint's own webhooks send it."""
    return json.dumps(event.body, separators=(",", ":")).encode()


def forward(
    client: httpx.Client, url: str, secret: str, event: StreamEvent, timestamp: int
) -> ForwardResult:
    """One signed POST; never raises for the local server's failures."""
    body = forward_body(event)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signing.headers([secret], event.id, timestamp, body),
    }
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        return ForwardResult(error=describe_transport_error(error))
    return ForwardResult(status=response.status_code)


def ready_line(secret: str) -> str:
    return f"Ready! Your webhook signing secret is {secret} (^C to quit)"


def event_line(at: datetime, event: StreamEvent, url: str, result: ForwardResult) -> str:
    answer = f"[{result.status}]" if result.status is not None else "[ERROR]"
    line = f"{at:%Y-%m-%d %H:%M:%S}   --> {event.type} [{event.id}]   <-- {answer} POST {url}"
    return f"{line} ({result.error})" if result.error else line


# --- the loop -------------------------------------------------------------------


class _StreamRefusedError(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)


def _check_event_types(api: httpx.Client, wanted: tuple[str, ...], credential: Credential) -> None:
    """Refuses a misspelt type, which would otherwise filter out everything. If
    the catalog cannot be read now, the stream's own errors will say why."""
    try:
        response = api.get("/v1/event_types")
    except httpx.HTTPError:
        return
    if response.status_code != 200:
        message = refusal(parse_status(response.text, response.status_code), credential)
        if message and response.status_code in (401, 403):
            raise ListenError(message)
        return
    known = [str(item.get("name", "")) for item in response.json().get("event_types", [])]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ListenError(
            f"unknown event type(s) in --events: {', '.join(unknown)}. "
            f"Known types: {', '.join(known)}",
            2,
        )


def _interrupt_on_sigterm() -> Any:
    """A SIGTERM stops the listener like Ctrl-C does. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def run_listen(options: ListenOptions, *, out: TextIO, err: TextIO) -> int:
    """Follows the stream and forwards until Ctrl-C or SIGTERM (status 0), or
    until the server refuses the credential (1). Bad input is status 2."""
    if options.print_secret:
        try:
            _say(out, load_secret(options.state_dir))
        except (ListenError, OSError) as error:
            _say(err, f"flint listen: {error}")
            return 1
        return 0
    previous = _interrupt_on_sigterm()
    try:
        _listen(options, out, err)
    except ListenError as error:
        _say(err, f"flint listen: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        _say(err, "flint listen: stopped")
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _listen(options: ListenOptions, out: TextIO, err: TextIO) -> NoReturn:
    if not options.forward_to:
        raise ListenError("--forward-to URL is required", 2)
    check_url(options.forward_to, "--forward-to")
    check_url(options.api_url, "--api-url")
    credential = parse_credential(options.api_key)
    secret = load_secret(options.state_dir)
    cursor = None if options.from_now else load_cursor(options.state_dir, credential.state_key)
    api = httpx.Client(
        base_url=options.api_url,
        headers={"authorization": f"Bearer {credential.token}", "user-agent": USER_AGENT},
        # Silent for several heartbeats: the stream is dead, reconnect.
        timeout=httpx.Timeout(CONNECT_TIMEOUT_SECONDS, read=options.heartbeat_seconds * 3 + 2),
    )
    # Never through a proxy from the environment, and never following redirects:
    # the line shows what the local server itself answered.
    local = httpx.Client(timeout=options.forward_timeout, follow_redirects=False, trust_env=False)
    with api, local:
        if options.event_types:
            _check_event_types(api, options.event_types, credential)
        _say(out, f"Connecting to {options.api_url} …")
        announced = False
        failures = 0
        while True:
            received = False
            try:
                with api.stream(
                    "GET",
                    "/v1/events:stream",
                    params=stream_params(cursor, options.event_types, options.heartbeat_seconds),
                ) as response:
                    if response.status_code != 200:
                        body = response.read().decode(errors="replace")
                        raise _StreamRefusedError(parse_status(body, response.status_code))
                    for item in parse_stream(response.iter_lines()):
                        if isinstance(item, ApiError):
                            raise _StreamRefusedError(item)
                        if not announced:
                            _say(out, ready_line(secret))
                            announced = True
                        elif failures:
                            _say(err, "flint listen: connected again; resuming")
                        received, failures = True, 0
                        if isinstance(item, Heartbeat):
                            # The position the stream has passed: a restart
                            # resumes there even when no event came.
                            if item.cursor and item.cursor != cursor:
                                save_cursor(options.state_dir, credential.state_key, item.cursor)
                                cursor = item.cursor
                            continue
                        result = forward(local, options.forward_to, secret, item, int(time.time()))
                        # Saved after the attempt, whatever its outcome: at least once.
                        if item.cursor:
                            save_cursor(options.state_dir, credential.state_key, item.cursor)
                            cursor = item.cursor
                        _say(out, event_line(datetime.now(), item, options.forward_to, result))
                problem = "the server ended the stream"
            except _StreamRefusedError as refused:
                message = refusal(refused.error, credential)
                if message:
                    raise ListenError(message) from None
                problem = f"the event stream failed: {_detail(refused.error)}"
            except httpx.HTTPError as error:
                problem = f"lost the event stream: {describe_transport_error(error)}"
            except StreamProtocolError as error:
                problem = f"lost the event stream: {error}"
            if received:
                # A stream that was working ended (a server restart, the edge
                # closing long streams): resume from the saved position at once.
                continue
            delay = backoff_seconds(failures) * random.uniform(0.8, 1.0)  # noqa: S311 - jitter
            failures += 1
            _say(err, f"flint listen: {problem}; reconnecting in {delay:.1f}s")
            time.sleep(delay)
