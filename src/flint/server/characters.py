"""Refuses NUL characters in every string of every request, for every RPC.

A NUL is never meaningful in a name, an address or a metadata value: PostgreSQL
refuses it in text columns (an INTERNAL error instead of a clear one), SQLite
stores it and hands it back, and C consumers (logs, shells, headers) cut the
string short at it. One check here, before any handler runs, covers gRPC and
REST (Envoy transcodes into the same messages) alike.

Cheap by construction: the check looks at the request's wire bytes first.
Protobuf encodes tags, lengths and non-zero varints without a 0x00 byte, so a
request with none cannot hold a NUL in a string, and only the rare request with
a zero byte (an empty nested message, a fixed-width number, or a NUL) is walked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from flint.common.errors import invalid_argument

REASON = "INVALID_CHARACTERS"
DESCRIPTION = "must not contain NUL characters"
_NUL = "\x00"


class RefusedRequest:
    """What the deserializer hands the pipeline instead of a request holding a
    NUL: the field it was found in, refused once the caller is authenticated."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field

    def error(self) -> Exception:
        return invalid_argument(self.field, REASON, DESCRIPTION)


def deserializer(message_class: type[Message]) -> Any:
    """A request deserializer for `message_class` that answers a RefusedRequest
    for a request with a NUL in any string (keys of maps included)."""
    parse = message_class.FromString

    def deserialize(data: bytes) -> Message | RefusedRequest:
        request = parse(data)
        if b"\x00" in data:
            path = nul_field(request)
            if path is not None:
                return RefusedRequest(path)
        return request

    return deserialize


def nul_field(message: Message) -> str | None:
    """The AIP-style path (`order.line_items[0].name`, `metadata[key]`) of the
    first string in `message` that holds a NUL, or None."""
    return next(_nul_paths(message, ""), None)


def _nul_paths(message: Message, prefix: str) -> Iterator[str]:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield from _map_paths(field, value, path)
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _value_paths(field, item, f"{path}[{index}]")
        else:
            yield from _value_paths(field, value, path)


def _map_paths(field: FieldDescriptor, entries: Any, path: str) -> Iterator[str]:
    entry = field.message_type
    assert entry is not None  # noqa: S101 - a map field's type is its entry message
    value_field = entry.fields_by_name["value"]
    for key, value in entries.items():
        # The key is named escaped: the error must not carry the NUL itself.
        shown = str(key).replace(_NUL, "\\0")
        if isinstance(key, str) and _NUL in key:
            yield f"{path}[{shown}]"
        else:
            yield from _value_paths(value_field, value, f"{path}[{shown}]")


def _value_paths(field: FieldDescriptor, value: Any, path: str) -> Iterator[str]:
    if field.type == FieldDescriptor.TYPE_STRING:
        if _NUL in value:
            yield path
    elif field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        yield from _nul_paths(value, f"{path}.")
