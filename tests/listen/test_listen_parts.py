"""The pure parts of `flint listen`: reading the stream, credentials, state
files and output lines. (The loop itself is tested end to end in test_listen.)"""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import datetime
from pathlib import Path

import jwt
import pytest

from flint import listen
from flint.listen import (
    ApiError,
    ForwardResult,
    Heartbeat,
    ListenError,
    StreamEvent,
    StreamProtocolError,
)

EVENT = {"id": "evt_1", "type": "order.paid", "cursor": "7.abc", "data": {"object": {"id": "o"}}}


def sse(*items: object) -> list[str]:
    lines: list[str] = []
    for item in items:
        lines += [f"data: {json.dumps(item)}", ""]
    return lines


def test_stream_lines_become_events_and_heartbeats():
    lines = sse({"heartbeat": {"time": "t", "cursor": "6.x"}}, {"event": EVENT})
    assert list(listen.parse_stream(lines)) == [
        Heartbeat("6.x"),
        StreamEvent("evt_1", "order.paid", "7.abc", EVENT),
    ]


def test_a_data_field_split_over_lines_is_joined_and_comments_are_skipped():
    text = json.dumps({"event": EVENT}, indent=1).splitlines()
    lines = [": keep-alive", *(f"data:{line}" for line in text), ""]
    [item] = listen.parse_stream(lines)
    assert item == StreamEvent("evt_1", "order.paid", "7.abc", EVENT)


def test_a_bare_status_body_in_the_stream_is_an_error():
    status = {
        "code": 16,
        "message": "The key was revoked",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "KEY_REVOKED"}],
    }
    assert list(listen.parse_stream([json.dumps(status)])) == [
        ApiError(16, "The key was revoked", "KEY_REVOKED")
    ]


def test_an_unknown_item_kind_is_skipped_and_garbage_is_a_protocol_error():
    assert list(listen.parse_stream(sse({"novelty": {}}))) == []
    with pytest.raises(StreamProtocolError):
        list(listen.parse_stream(["data: {not json", ""]))


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ("upstream connect error", 503, ApiError(14, "upstream connect error")),
        ("", 401, ApiError(16, "HTTP 401")),
        ('{"code": 7, "message": "no"}', 403, ApiError(7, "no")),
    ],
)
def test_error_bodies_are_read_as_status(body: str, status: int, expected: ApiError):
    assert listen.parse_status(body, status) == expected


def test_stream_parameters_carry_the_cursor_and_each_type():
    assert listen.stream_params("7.abc", ("order.paid", "refund.succeeded"), 3) == [
        ("heartbeat_seconds", 3),
        ("after", "7.abc"),
        ("types", "order.paid"),
        ("types", "refund.succeeded"),
    ]
    assert listen.stream_params(None, (), 3) == [("heartbeat_seconds", 3)]


def test_event_types_are_split_on_commas():
    assert listen.parse_event_types(" order.paid,, refund.succeeded ,order.paid") == (
        "order.paid",
        "refund.succeeded",
    )


def test_a_test_key_is_named_by_its_sha256():
    credential = listen.parse_credential("sk_test_abc")
    assert credential.kind == "merchant"
    assert credential.state_key == hashlib.sha256(b"sk_test_abc").hexdigest()
    assert "sk_test_abc" not in repr(credential)


@pytest.mark.parametrize("value", ["sk_live_abc", " sk_live_abc "])
def test_a_live_key_is_refused(value: str):
    with pytest.raises(ListenError, match=r"refusing a live secret key") as caught:
        listen.parse_credential(value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("value", ["", "pak_partnerkey", "not.a.token"])
def test_what_is_neither_a_test_key_nor_an_access_token_is_refused(value: str):
    with pytest.raises(ListenError) as caught:
        listen.parse_credential(value)
    assert caught.value.exit_code == 2


def _token(**claims: str) -> str:
    return jwt.encode(claims, "a-key-the-server-would-check" * 2, algorithm="HS256")


def test_tokens_of_one_install_share_their_saved_position():
    first = listen.parse_credential(_token(sub="ins_1", env="test", jti="a"))
    refreshed = listen.parse_credential(_token(sub="ins_1", env="test", jti="b"))
    other = listen.parse_credential(_token(sub="ins_2", env="test", jti="a"))
    assert first.kind == "app"
    assert first.state_key == refreshed.state_key != other.state_key


def test_a_live_install_token_is_refused():
    with pytest.raises(ListenError, match="live install"):
        listen.parse_credential(_token(sub="ins_1", env="live"))


def test_the_secret_is_made_once_and_kept_private(tmp_path: Path):
    state = tmp_path / "state"
    secret = listen.load_secret(state)
    assert secret.startswith("whsec_")
    assert listen.load_secret(state) == secret
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "secret").stat().st_mode) == 0o600


def test_a_cursor_is_saved_privately_and_replaced_whole(tmp_path: Path):
    assert listen.load_cursor(tmp_path, "k") is None
    listen.save_cursor(tmp_path, "k", "1.a")
    listen.save_cursor(tmp_path, "k", "2.b")
    assert listen.load_cursor(tmp_path, "k") == "2.b"
    assert [p.name for p in (tmp_path / "cursors").iterdir()] == ["k"]  # no temporary left
    assert stat.S_IMODE((tmp_path / "cursors" / "k").stat().st_mode) == 0o600


def test_a_line_per_event_with_the_answer_or_the_error():
    event = StreamEvent("evt_1", "order.paid", "7.abc", EVENT)
    at = datetime(2030, 1, 2, 3, 4, 5)
    url = "http://localhost:3000/webhooks"
    assert listen.event_line(at, event, url, ForwardResult(status=200)) == (
        "2030-01-02 03:04:05   --> order.paid [evt_1]   <-- [200] POST http://localhost:3000/webhooks"
    )
    assert listen.event_line(at, event, url, ForwardResult(error="timed out")) == (
        "2030-01-02 03:04:05   --> order.paid [evt_1]   <-- [ERROR] POST "
        "http://localhost:3000/webhooks (timed out)"
    )


def test_the_ready_line_shows_the_secret():
    assert listen.ready_line("whsec_x") == (
        "Ready! Your webhook signing secret is whsec_x (^C to quit)"
    )


def test_the_body_is_the_event_as_compact_json():
    event = StreamEvent("evt_1", "order.paid", "7.abc", EVENT)
    assert json.loads(listen.forward_body(event)) == EVENT
    assert b" " not in listen.forward_body(event)


def test_backoff_grows_then_holds():
    waits = [listen.backoff_seconds(n) for n in range(12)]
    assert waits == sorted(waits)
    assert waits[0] == 0.5
    assert waits[-1] == waits[-2] == 30.0


@pytest.mark.parametrize("code", [2, 4, 8, 10, 13, 14])
def test_server_trouble_is_retried(code: int):
    assert listen.refusal(ApiError(code, "busy"), listen.parse_credential("sk_test_a")) is None


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (ApiError(16, "revoked", "KEY_REVOKED"), "the API key was refused: revoked (KEY_REVOKED)"),
        (ApiError(7, "no scope", "SCOPE_MISSING"), "may not read events"),
        (ApiError(3, "bad", "CURSOR_INVALID"), "--from-now"),
        (ApiError(9, "old", "CURSOR_EXPIRED"), "--from-now"),
    ],
)
def test_refusals_say_what_to_do(error: ApiError, says: str):
    message = listen.refusal(error, listen.parse_credential("sk_test_a"))
    assert message is not None
    assert says in message


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://localhost:3000/webhooks", True),
        ("https://example.com/hook", True),
        ("localhost:3000/webhooks", False),
        ("ftp://localhost/x", False),
        ("http://", False),
    ],
)
def test_urls_must_be_absolute_http(url: str, ok: bool):
    if ok:
        assert listen.check_url(url, "--forward-to") == url
    else:
        with pytest.raises(ListenError, match="--forward-to") as caught:
            listen.check_url(url, "--forward-to")
        assert caught.value.exit_code == 2
