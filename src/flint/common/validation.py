"""Input checks shared by the services. Each adds a FieldViolation with a stable
reason instead of raising, so one response names every bad field."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from urllib.parse import urlsplit

from flint.common.errors import Violations, invalid_argument

MAX_URL_LENGTH = 2048
MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def check_text(
    violations: Violations,
    fld: str,
    value: str,
    *,
    max_length: int,
    required: bool = False,
) -> None:
    if required and not value.strip():
        violations.add(fld, "FIELD_REQUIRED", "is required")
    elif len(value) > max_length:
        violations.add(fld, "FIELD_TOO_LONG", f"must be at most {max_length} characters")


def url_problem(value: str, *, allow_loopback_http: bool = True) -> tuple[str, str] | None:
    """Why `value` is not an acceptable absolute URL, as (reason, description), or None.

    https is required; plain http is accepted only for loopback hosts, where a
    developer's local server runs.
    """
    if len(value) > MAX_URL_LENGTH:
        return "FIELD_TOO_LONG", f"must be at most {MAX_URL_LENGTH} characters"
    if any(ch.isspace() for ch in value):
        return "INVALID_URL", "must not contain whitespace"
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a non-numeric port
    except ValueError:
        return "INVALID_URL", "is not a valid URL"
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "INVALID_URL", "must be an absolute https:// URL"
    if parts.username is not None or parts.password is not None:
        return "INVALID_URL", "must not contain credentials"
    if parts.fragment or value.endswith("#"):
        return "INVALID_URL", "must not contain a fragment"
    if parts.scheme == "http" and not (allow_loopback_http and parts.hostname in LOOPBACK_HOSTS):
        return "INSECURE_URL", "must use https:// (http:// only for localhost or 127.0.0.1)"
    return None


def check_url(violations: Violations, fld: str, value: str, *, required: bool = False) -> None:
    if not value:
        if required:
            violations.add(fld, "FIELD_REQUIRED", "is required")
        return
    problem = url_problem(value)
    if problem:
        violations.add(fld, *problem)


def email_problem(value: str) -> str | None:
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.match(value):
        return "is not an email address"
    return None


def check_email(violations: Violations, fld: str, value: str, *, required: bool = False) -> None:
    if not value:
        if required:
            violations.add(fld, "FIELD_REQUIRED", "is required")
        return
    problem = email_problem(value)
    if problem:
        violations.add(fld, "INVALID_EMAIL", problem)


MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500


def check_metadata(violations: Violations, fld: str, metadata: dict[str, str]) -> None:
    """Stripe's limits: 50 keys, keys up to 40 characters, values up to 500."""
    if len(metadata) > MAX_METADATA_KEYS:
        violations.add(fld, "TOO_MANY_METADATA_KEYS", f"must have at most {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_LENGTH:
            violations.add(
                f"{fld}[{key}]",
                "INVALID_METADATA_KEY",
                f"keys must be 1–{MAX_METADATA_KEY_LENGTH} characters",
            )
        elif len(value) > MAX_METADATA_VALUE_LENGTH:
            violations.add(
                f"{fld}[{key}]",
                "FIELD_TOO_LONG",
                f"values must be at most {MAX_METADATA_VALUE_LENGTH} characters",
            )


def update_paths(
    mask: Sequence[str], updatable: Collection[str], noun: str, given: Mapping[str, object]
) -> frozenset[str]:
    """The fields an update sets (AIP-134): the paths of `mask`, each of which must
    be one of `updatable`; with no mask, every field `given` a non-empty value.

    An update that would set nothing is refused: without a mask a false or empty
    value cannot be told from "not given", and answering as if it had been set
    (`active: false` on a payment link) would mislead the caller."""
    for index, path in enumerate(mask):
        if path not in updatable:
            raise invalid_argument(
                f"update_mask.paths[{index}]",
                "UNKNOWN_FIELD_MASK_PATH",
                f"{path!r} is not an updatable {noun} field",
            )
    if mask:
        return frozenset(mask)
    paths = frozenset(name for name, value in given.items() if value)
    if not paths:
        raise invalid_argument(
            "update_mask",
            "FIELD_REQUIRED",
            "name the fields to change (false and empty values need update_mask)",
        )
    return paths
