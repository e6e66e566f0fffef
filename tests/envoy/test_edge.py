"""The Envoy edge itself: its rendered config, and how it answers when the request
never reaches (or cannot reach) the gRPC server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from flint.envoy import HOSTED_PREFIXES, MAX_REQUEST_BYTES, MAX_REQUEST_HEADERS_KB
from tests.conftest import Edge, MerchantCreds, PartnerCreds, free_port, start_envoy
from tests.errors import rest_error

pytestmark = pytest.mark.e2e

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def port_flags(grpc_port: int | None = None) -> list[str]:
    return [
        "--http-port",
        str(free_port()),
        "--grpc-port",
        str(grpc_port or free_port()),
        "--hosted-port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
    ]


def flint_envoy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flint", "envoy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_edge_error(response: httpx.Response, status: int, code: int, reason: str) -> str:
    """Envoy's own reply in the google.rpc.Status JSON shape; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    details = rest_error(response)
    assert (details.code, details.reason) == (str(code), reason), response.text
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}
    assert response.json()["details"] == [{**info, "domain": "flint.dev"}]
    assert details.message
    return details.message


# --- the rendered configuration ------------------------------------------------------


def test_validate_mode_accepts_the_rendered_config():
    result = flint_envoy("--mode", "validate", *port_flags())
    assert result.returncode == 0, result.stdout + result.stderr
    # Envoy itself ran and checked it (not a no-op).
    assert re.search(r"configuration '.*envoy\.yaml' OK", result.stdout), result.stdout


def test_print_config_has_transcoder_sse_status_conversion_and_stream_route():
    grpc_a, grpc_b, http_port = free_port(), free_port(), free_port()
    result = flint_envoy(
        "--print-config",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_a),
        "--grpc-port",
        str(grpc_b),
    )
    assert result.returncode == 0, result.stderr
    config = result.stdout
    assert f"name: {TRANSCODER}" in config
    assert "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3." in config
    assert re.search(r"^\s+- flint\.apps\.v1\.AppsService$", config, re.M)
    assert re.search(r"^\s+- flint\.accounts\.v1\.AccountsService$", config, re.M)
    assert re.search(r"^\s+stream_sse_style_delimited: true$", config, re.M)
    assert re.search(r"^\s+convert_grpc_status: true$", config, re.M)
    assert re.search(r"^\s+preserve_proto_field_names: true$", config, re.M)
    assert re.search(r"^\s+reject_unknown_method: true$", config, re.M)
    assert re.search(r"^\s+reject_unknown_query_parameters: true$", config, re.M)
    assert re.search(rf"^\s+max_request_headers_kb: {MAX_REQUEST_HEADERS_KB}$", config, re.M)
    # The request-id check runs first, before the transcoder and the router.
    assert config.index("envoy.filters.http.lua") < config.index(f"name: {TRANSCODER}")
    # A streaming route without a route timeout, placed before the catch-all route
    # (Envoy takes the first match).
    stream = re.search(
        r'- match: \{ safe_regex: \{ regex: "(?P<regex>[^"]*:stream[^"]*)" \} \}\n'
        r"\s+route: \{ cluster: grpc, timeout: 0s(?P<rest>[^}]*)\}",
        config,
    )
    assert stream, config
    assert "idle_timeout: 0s" in stream["rest"]
    catch_all = config.index('- match: { prefix: "/" }')
    assert stream.start() < catch_all
    assert re.fullmatch(stream["regex"], "/v1/events:stream")
    assert not re.fullmatch(stream["regex"], "/v1/apps")
    # Every flag made it into the config.
    for port in (grpc_a, grpc_b, http_port):
        assert f"port_value: {port} " in config


def test_running_edge_loaded_the_stream_route_without_timeout(edge: Edge):
    dump = httpx.get(f"http://127.0.0.1:{edge.admin_port}/config_dump", timeout=10).json()
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    manager = listeners["static_listeners"][0]["listener"]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    streaming = [r for r in routes if r["match"].get("safe_regex", {}).get("regex", "")]
    assert len(streaming) == 1
    assert streaming[0]["route"]["cluster"] == "grpc"
    assert streaming[0]["route"]["timeout"] == "0s"
    assert routes.index(streaming[0]) < routes.index(
        next(r for r in routes if r["match"].get("prefix") == "/")
    )
    transcoder = next(f for f in manager["typed_config"]["http_filters"] if f["name"] == TRANSCODER)
    assert transcoder["typed_config"]["print_options"]["stream_sse_style_delimited"] is True
    assert transcoder["typed_config"]["convert_grpc_status"] is True


# --- Envoy's own errors as JSON --------------------------------------------------------


def test_unknown_v1_path_is_json_route_not_found(rest):
    response = rest.get("/v1/nothing")
    message = assert_edge_error(response, 404, 5, "ROUTE_NOT_FOUND")
    assert "/v1/nothing" in message


def test_post_to_unknown_path_outside_v1_is_json_not_text(rest):
    response = rest.post("/nothing/here", content=b"hello", headers={"Content-Type": "text/plain"})
    assert not response.headers["content-type"].startswith("text/plain")
    message = assert_edge_error(response, 404, 5, "ROUTE_NOT_FOUND")
    assert "/nothing/here" in message


def test_unknown_http_method_on_a_known_path_is_a_json_error(rest, new_partner: PartnerCreds):
    response = rest.put("/v1/apps", json={"name": "x"}, headers=auth(new_partner.key))
    # Refused by Envoy (never 415/503 from a request that reached the gRPC cluster),
    # in the JSON error shape, with the status code and reason that belong together.
    assert (response.status_code, response.json().get("code")) in {(404, 5), (405, 12)}
    reason = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}[response.status_code]
    message = assert_edge_error(response, response.status_code, response.json()["code"], reason)
    assert "/v1/apps" in message
    # …and nothing was created.
    listed = rest.get("/v1/apps", headers=auth(new_partner.key))
    assert listed.json()["apps"] == []


def test_oversized_body_is_json_413_not_a_retryable_429(rest, new_partner: PartnerCreds):
    # Larger than the gRPC server's 4 MiB message limit: without a limit at the edge the
    # server's RESOURCE_EXHAUSTED became 429, which clients (and the SDK) retry forever.
    too_large = {"name": "x" * (5 * 1024 * 1024), "redirect_uris": ["https://a.example"]}
    response = rest.post("/v1/apps", json=too_large, headers=auth(new_partner.key))
    assert_edge_error(response, 413, 3, "REQUEST_TOO_LARGE")
    assert response.headers["x-request-id"]
    just_over = {"name": "x" * MAX_REQUEST_BYTES}
    response = rest.post("/v1/apps", json=just_over, headers=auth(new_partner.key))
    assert_edge_error(response, 413, 3, "REQUEST_TOO_LARGE")
    # …while a body under the limit still reaches the server (which names the field).
    under = {"name": "x" * (MAX_REQUEST_BYTES // 2), "redirect_uris": ["https://a.example"]}
    response = rest.post("/v1/apps", json=under, headers=auth(new_partner.key))
    assert response.status_code == 400
    assert rest_error(response).reason == "FIELD_TOO_LONG"
    listed = rest.get("/v1/apps", headers=auth(new_partner.key))
    assert listed.json()["apps"] == []


# --- request ids -------------------------------------------------------------------


def test_grpc_method_response_carries_an_envoy_request_id(rest, new_partner: PartnerCreds):
    first = rest.get("/v1/scopes", headers=auth(new_partner.key))
    second = rest.get("/v1/scopes", headers=auth(new_partner.key))
    assert first.status_code == second.status_code == 200
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert ids[0] != ids[1]
    # Envoy generates dashed UUIDs (the server's own fallback is a bare hex uuid), so
    # the id in the response is the one Envoy passed to the server.
    for value in ids:
        assert str(uuid.UUID(value)) == value


def test_error_from_the_server_carries_the_request_id(rest):
    response = rest.get("/v1/apps", headers={"x-request-id": "req-for-an-error"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "req-for-an-error"


def test_client_request_id_comes_back_unchanged(rest, new_partner: PartnerCreds):
    request_id = f"plugin-{uuid.uuid4().hex}"
    response = rest.get("/v1/scopes", headers={**auth(new_partner.key), "x-request-id": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [b"req\tid", "r\u00e9q-caf\u00e9".encode(), b"\xff\xfe", b"x" * 2000, b"req id with spaces"],
    ids=["tab", "utf-8", "bytes", "long", "spaces"],
)
def test_a_request_id_that_is_not_a_plain_token_is_replaced(
    rest, new_partner: PartnerCreds, request_id: bytes
):
    response = rest.get(
        "/v1/scopes", headers=[*auth(new_partner.key).items(), (b"x-request-id", request_id)]
    )
    assert response.status_code == 200, response.text
    replaced = response.headers["x-request-id"]
    assert replaced.encode() != request_id
    assert re.fullmatch(r"[0-9a-f-]{32,36}", replaced), replaced


def test_a_bad_request_id_on_an_error_answer_is_replaced_too(rest):
    response = rest.get("/v1/apps", headers=[(b"x-request-id", b"bad\tid")])
    assert response.status_code == 401, response.text
    assert rest_error(response).reason == "CREDENTIAL_MISSING"
    assert "\t" not in response.headers["x-request-id"]


# --- long URLs -----------------------------------------------------------------------


def test_two_thousand_query_parameters_are_a_json_400_not_a_retryable_429(
    rest, new_merchant: MerchantCreds
):
    query = "&".join("types=order.paid" for _ in range(2000))
    response = rest.get(f"/v1/events?{query}", headers=auth(new_merchant.test_key))
    message = assert_edge_error(response, 400, 3, "REQUEST_HEADERS_TOO_LARGE")
    assert f"{MAX_REQUEST_HEADERS_KB} KiB" in message


def test_a_long_query_under_the_limit_reaches_the_server(rest, new_merchant: MerchantCreds):
    # About 12 KiB: Envoy passes it on with a copy of the path, which used to
    # pass the gRPC server's 16 KiB metadata limit (429 RESOURCE_EXHAUSTED).
    query = "&".join("types=order.paid" for _ in range(700))
    assert 11 * 1024 < len(query) < MAX_REQUEST_HEADERS_KB * 1024
    response = rest.get(f"/v1/events?{query}", headers=auth(new_merchant.test_key))
    assert response.status_code == 200, response.text
    assert response.json()["events"] == []


# --- upstreams down ----------------------------------------------------------------


@pytest.fixture(scope="module")
def orphan_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """An Envoy whose gRPC and hosted upstreams have nothing listening."""
    running = start_envoy(free_port(), tmp_path_factory.mktemp("orphan-envoy"))
    yield running
    running.process.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/scopes"), ("POST", "/v1/apps"), ("DELETE", "/v1/apps/app_x")],
)
def test_grpc_upstream_down_is_503_upstream_unavailable(orphan_edge: Edge, method, path):
    response = httpx.request(
        method,
        orphan_edge.url + path,
        json={"name": "x"} if method == "POST" else None,
        headers={"Authorization": "Bearer pak_whatever"},
        timeout=10,
    )
    assert_edge_error(response, 503, 14, "UPSTREAM_UNAVAILABLE")


def test_route_errors_do_not_need_the_upstream(orphan_edge: Edge):
    # Envoy answers these itself, upstream or not.
    response = httpx.get(orphan_edge.url + "/v1/nothing", timeout=10)
    assert_edge_error(response, 404, 5, "ROUTE_NOT_FOUND")
    response = httpx.get(orphan_edge.url + "/v1/apps?colour=red", timeout=10)
    assert_edge_error(response, 400, 3, "INVALID_REQUEST")


@pytest.mark.parametrize("prefix", HOSTED_PREFIXES)
def test_hosted_prefixes_are_not_transcoded(rest, prefix):
    # The session's edge has nothing on its hosted port: routed there, not to the
    # transcoder (which would answer 404 ROUTE_NOT_FOUND).
    response = rest.get(f"{prefix}authorize")
    assert_edge_error(response, 503, 14, "UPSTREAM_UNAVAILABLE")


# --- a hosted web app behind the edge ------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HostedStub:
    port: int
    requests: list[Seen] = field(default_factory=list)


@pytest.fixture(scope="module")
def hosted_stub() -> Iterator[HostedStub]:
    """A stand-in for the hosted web app: records requests, answers like a web app."""
    stub = HostedStub(port=0)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            stub.requests.append(
                Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if self.path.startswith("/oauth/authorize"):
                self._send(302, "text/html", b"", location="https://shop.example.com/login")
            elif self.path == "/oauth/token":
                payload = json.dumps({"error": "invalid_grant"}).encode()
                self._send(400, "application/json", payload)
            else:
                self._send(404, "text/html; charset=utf-8", b"<h1>No such page</h1>")

        def _send(self, status: int, content_type: str, body: bytes, **extra: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def hosted_edge(
    hosted_stub: HostedStub, grpc_server: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    running = start_envoy(grpc_server, tmp_path_factory.mktemp("hosted-envoy"), hosted_stub.port)
    yield running
    running.process.stop()


def test_the_hosted_app_gets_the_replaced_request_id_and_so_does_the_client(
    hosted_edge: Edge, hosted_stub: HostedStub
):
    response = httpx.get(
        hosted_edge.url + "/oauth/authorize?client_id=ca_1",
        headers=[(b"x-request-id", "caf\u00e9\tid".encode())],
        timeout=10,
    )
    assert response.status_code == 302
    seen = hosted_stub.requests[-1]
    # One id for the whole request: Envoy's, the hosted app's and the answer's.
    assert seen.headers["x-request-id"] == response.headers["x-request-id"]
    assert str(uuid.UUID(response.headers["x-request-id"])) == response.headers["x-request-id"]


def test_hosted_redirect_passes_through_untouched(hosted_edge: Edge, hosted_stub: HostedStub):
    response = httpx.get(hosted_edge.url + "/oauth/authorize?client_id=ca_1&state=xyz", timeout=10)
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example.com/login"
    seen = hosted_stub.requests[-1]
    assert (seen.method, seen.path) == ("GET", "/oauth/authorize?client_id=ca_1&state=xyz")
    assert seen.headers["x-request-id"]


def test_hosted_form_post_and_its_errors_are_not_rewritten(
    hosted_edge: Edge, hosted_stub: HostedStub
):
    response = httpx.post(
        hosted_edge.url + "/oauth/token",
        data={"grant_type": "authorization_code", "code": "abc"},
        timeout=10,
    )
    # The hosted app's own RFC 6749 error, not Envoy's google.rpc.Status shape.
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant"}
    seen = hosted_stub.requests[-1]
    assert seen.method == "POST"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.body == b"grant_type=authorization_code&code=abc"


def test_hosted_bodies_are_not_limited_by_the_rest_body_limit(
    hosted_edge: Edge, hosted_stub: HostedStub
):
    # The hosted app refuses oversized forms itself, with its own page.
    body = b"x" * (MAX_REQUEST_BYTES + 1)
    response = httpx.post(hosted_edge.url + "/oauth/token", content=body, timeout=10)
    assert response.status_code == 400
    assert hosted_stub.requests[-1].body == body


def test_hosted_404_page_is_not_turned_into_a_route_error(
    hosted_edge: Edge, hosted_stub: HostedStub
):
    response = httpx.get(hosted_edge.url + "/pay/plink_missing", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<h1>No such page</h1>"
    assert hosted_stub.requests[-1].path == "/pay/plink_missing"


def test_hosted_edge_still_transcodes_v1(hosted_edge: Edge, new_partner: PartnerCreds):
    response = httpx.get(hosted_edge.url + "/v1/scopes", headers=auth(new_partner.key), timeout=10)
    assert response.status_code == 200
    assert response.json()["scopes"]


def test_validate_mode_refuses_a_config_envoy_cannot_load():
    # The check is real: an out-of-range listener port fails Envoy's own validation.
    result = flint_envoy("--mode", "validate", "--http-port", "70000", "--grpc-port", "1")
    assert result.returncode != 0
    assert "PortValue: value must be less than or equal to 65535" in result.stdout
