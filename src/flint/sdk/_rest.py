"""Turning an RPC and its request message into an HTTP request, from the
`google.api.http` rule in the generated descriptors — the same rule Envoy's
transcoder follows, so the SDK never hand-writes a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote

from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

# `{field.path}` or `{field.path=pattern/*}` in a path template.
_VARIABLE = re.compile(r"\{([a-zA-Z0-9_.]+)(?:=[^}]*)?\}")

# Verbs whose requests change something: they always carry an Idempotency-Key.
WRITE_VERBS = frozenset({"POST", "PATCH", "DELETE", "PUT"})


@dataclass(frozen=True)
class Binding:
    verb: str
    template: str
    body: str  # "", "*", or the name of one request field


@dataclass(frozen=True)
class HttpCall:
    verb: str
    path: str
    params: list[tuple[str, str]]
    json: dict[str, Any] | None


def _binding(method: MethodDescriptor, rule: Any) -> Binding:
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        raise ValueError(f"{method.full_name} has an unsupported HTTP rule")
    return Binding(verb=verb.upper(), template=getattr(rule, verb), body=rule.body)


@cache
def bindings(method: MethodDescriptor) -> tuple[Binding, ...]:
    """The HTTP bindings of `method`: the primary one, then any additional ones
    (`/v1/webhook_deliveries/{delivery_id}/attempts` or
    `/v1/webhook_endpoints/{endpoint_id}/attempts`)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        raise ValueError(f"{method.full_name} has no google.api.http rule")
    rule = options.Extensions[annotations_pb2.http]
    return (
        _binding(method, rule),
        *(_binding(method, extra) for extra in rule.additional_bindings),
    )


def binding(method: MethodDescriptor) -> Binding:
    """The primary HTTP binding of `method`."""
    return bindings(method)[0]


def _choose(method: MethodDescriptor, data: dict[str, Any]) -> Binding:
    """The first binding whose path fields the request sets."""
    candidates = bindings(method)
    for candidate in candidates:
        fields = _VARIABLE.findall(candidate.template)
        if all(_get_path(data, f.split(".")) not in (None, "") for f in fields):
            return candidate
    return candidates[0]  # http_call names the missing field


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping of `message`, with proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _pop_path(data: dict[str, Any], path: list[str]) -> Any:
    node: Any = data
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    return node.pop(path[-1], None)


def _get_path(data: dict[str, Any], path: list[str]) -> Any:
    node: Any = data
    for name in path:
        node = node.get(name) if isinstance(node, dict) else None
    return node


def _query_params(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _query_params(f"{prefix}.{key}" if prefix else key, item, out)
    elif isinstance(value, list):
        for item in value:
            _query_params(prefix, item, out)
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    else:
        out.append((prefix, str(value)))


def http_call(method: MethodDescriptor, request: Message) -> HttpCall:
    """The HTTP verb, path, query parameters and JSON body for calling `method`
    with `request`, as Envoy's gRPC-JSON transcoder expects them."""
    data = to_json(request)
    rule = _choose(method, data)
    bound: list[list[str]] = []

    def substitute(match: re.Match[str]) -> str:
        field_path = match.group(1).split(".")
        value = _get_path(data, field_path)
        if value in (None, ""):
            raise ValueError(f"{method.name} needs {match.group(1)}")
        bound.append(field_path)
        return quote(str(value), safe="")

    path = _VARIABLE.sub(substitute, rule.template)
    body: dict[str, Any] | None = None
    if rule.body == "*":
        for field_path in bound:
            if len(field_path) == 1:
                _pop_path(data, field_path)
        body, data = data, {}
    elif rule.body:
        # A field bound in the path may stay inside the body (`{order.id}` with
        # body "order"); the transcoder takes the same value from both.
        body = data.pop(rule.body, {})
        for field_path in bound:
            if field_path[0] != rule.body:
                _pop_path(data, field_path)
    else:
        for field_path in bound:
            _pop_path(data, field_path)
    params: list[tuple[str, str]] = []
    _query_params("", data, params)
    if body is None and rule.verb in WRITE_VERBS and rule.verb != "DELETE":
        body = {}
    return HttpCall(verb=rule.verb, path=path, params=params, json=body)
