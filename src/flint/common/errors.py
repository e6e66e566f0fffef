"""Domain errors. They carry a canonical code, a stable UPPER_SNAKE_CASE reason and
field violations; the gRPC layer turns them into google.rpc.Status. Nothing here
knows about gRPC."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Code(enum.Enum):
    """Canonical error codes (google.rpc.Code names)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str
    reason: str


@dataclass
class FlintError(Exception):
    code: Code
    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Some refusals are changes too (a failed sign-in counts towards a limit, a
    # replayed code revokes its tokens): the unit of work commits before raising.
    commit: bool = False

    def with_violation(self, fld: str, description: str) -> FlintError:
        """Also names the offending field (BadRequest), for refusals that are
        about a value but are decided against stored state."""
        self.violations.append(FieldViolation(fld, description, self.reason))
        return self

    def __str__(self) -> str:
        return f"{self.code.value} {self.reason}: {self.message}"


def invalid_argument(fld: str, reason: str, description: str) -> FlintError:
    return FlintError(
        Code.INVALID_ARGUMENT,
        reason,
        description,
        [FieldViolation(fld, description, reason)],
        {"field": fld},
    )


def not_found(resource: str, resource_id: str) -> FlintError:
    # One answer for "does not exist" and "belongs to someone else", so ids of
    # other tenants cannot be probed.
    return FlintError(
        Code.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        f"No such {resource}: {resource_id!r}",
        metadata={"resource": resource, "id": resource_id},
    )


def already_exists(resource: str, fld: str, message: str) -> FlintError:
    return FlintError(
        Code.ALREADY_EXISTS,
        "RESOURCE_ALREADY_EXISTS",
        message,
        [FieldViolation(fld, message, "RESOURCE_ALREADY_EXISTS")],
        {"resource": resource, "field": fld},
    )


class Violations:
    """Collects every problem with an input before refusing it, so a caller can
    fix them all at once."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, fld: str, reason: str, description: str) -> None:
        self._items.append(FieldViolation(fld, description, reason))

    def __bool__(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        if not self._items:
            return
        first = self._items[0]
        message = "; ".join(f"{v.field}: {v.description}" for v in self._items)
        raise FlintError(
            Code.INVALID_ARGUMENT,
            first.reason,
            message,
            list(self._items),
            {"field": first.field},
        )
