"""Apps domain: registration and client credentials, always scoped to the partner."""

from __future__ import annotations

import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from flint.apps.models import AppRecord
from flint.common import credentials, scopes
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, Violations, invalid_argument, not_found
from flint.common.ids import new_id
from flint.common.pagination import fetch_page, parse_page
from flint.common.validation import check_text, check_url, update_paths, url_problem
from flint.installs.models import InstallRecord

STATUSES = ("active", "disabled")
MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 2000
MAX_REDIRECT_URIS = 10
CLIENT_ID_PREFIX = "ca_"


@dataclass(frozen=True)
class AppFields:
    """What a partner may set on an app. `status` "" means "leave as is" on update
    and "active" on create."""

    name: str = ""
    description: str = ""
    icon_url: str = ""
    support_url: str = ""
    privacy_url: str = ""
    redirect_uris: Sequence[str] = ()
    requested_scopes: Sequence[str] = ()
    status: str = ""


UPDATABLE = frozenset(f.name for f in fields(AppFields))


def _validate(values: AppFields, violations: Violations, only: frozenset[str] = UPDATABLE) -> None:
    if "name" in only:
        check_text(violations, "app.name", values.name, max_length=MAX_NAME_LENGTH, required=True)
    if "description" in only:
        check_text(
            violations, "app.description", values.description, max_length=MAX_DESCRIPTION_LENGTH
        )
    for url_field in ("icon_url", "support_url", "privacy_url"):
        if url_field in only:
            check_url(violations, f"app.{url_field}", getattr(values, url_field))
    if "redirect_uris" in only:
        _validate_redirect_uris(values.redirect_uris, violations)
    if "requested_scopes" in only:
        for index, scope in enumerate(values.requested_scopes):
            if scope not in scopes.NAMES:
                violations.add(
                    f"app.requested_scopes[{index}]",
                    "UNKNOWN_SCOPE",
                    f"{scope!r} is not in the scope catalog",
                )
    if "status" in only and values.status and values.status not in STATUSES:
        violations.add("app.status", "UNKNOWN_ENUM_VALUE", "must be active or disabled")


def _validate_redirect_uris(uris: Sequence[str], violations: Violations) -> None:
    if not uris:
        violations.add("app.redirect_uris", "FIELD_REQUIRED", "needs at least one redirect URI")
        return
    if len(uris) > MAX_REDIRECT_URIS:
        violations.add(
            "app.redirect_uris", "TOO_MANY_VALUES", f"must have at most {MAX_REDIRECT_URIS}"
        )
    seen: set[str] = set()
    for index, uri in enumerate(uris):
        problem = url_problem(uri)
        if problem:
            violations.add(f"app.redirect_uris[{index}]", *problem)
        elif uri in seen:
            violations.add(f"app.redirect_uris[{index}]", "DUPLICATE_VALUE", "is listed twice")
        seen.add(uri)


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _new_client_secret() -> str:
    return credentials.generate_secret(credentials.CLIENT_SECRET_PREFIX)


def _new_client_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return CLIENT_ID_PREFIX + "".join(secrets.choice(alphabet) for _ in range(24))


def create_app(uow: UnitOfWork, principal: Principal, values: AppFields) -> tuple[AppRecord, str]:
    """Registers an app for the calling partner; returns it with its client secret."""
    violations = Violations()
    _validate(values, violations)
    violations.raise_if_any()
    client_secret = _new_client_secret()
    app = AppRecord(
        id=new_id("app"),
        partner_id=principal.id,
        name=values.name.strip(),
        description=values.description,
        icon_url=values.icon_url,
        support_url=values.support_url,
        privacy_url=values.privacy_url,
        redirect_uris=list(values.redirect_uris),
        requested_scopes=_unique(values.requested_scopes),
        status=values.status or "active",
        client_id=_new_client_id(),
        client_secret_hash=credentials.hash_secret(client_secret),
        created_at=uow.now,
        updated_at=uow.now,
    )
    uow.session.add(app)
    return app, client_secret


DELETED = "deleted"


def _visible_app(session: Session, principal: Principal, app_id: str) -> AppRecord:
    query = select(AppRecord).where(AppRecord.id == app_id, AppRecord.status != DELETED)
    if principal.kind is not PrincipalKind.ADMIN:
        query = query.where(AppRecord.partner_id == principal.id)
    app = session.scalar(query)
    if app is None:
        raise not_found("app", app_id)
    return app


def get_app(session: Session, principal: Principal, app_id: str) -> AppRecord:
    return _visible_app(session, principal, app_id)


def list_apps(
    session: Session, principal: Principal, *, page_size: int, page_token: str
) -> tuple[list[AppRecord], str]:
    query = select(AppRecord).where(AppRecord.status != DELETED)
    if principal.kind is PrincipalKind.ADMIN:
        context = "apps:*"
    else:
        query = query.where(AppRecord.partner_id == principal.id)
        context = f"apps:{principal.id}"
    page = parse_page(session, page_size, page_token, context=context)
    return fetch_page(session, query, AppRecord.id, page)


def update_app(
    uow: UnitOfWork, principal: Principal, app_id: str, values: AppFields, mask: Sequence[str]
) -> AppRecord:
    """Sets the fields named in `mask`; an empty mask means every non-empty field."""
    paths = update_paths(
        mask, UPDATABLE, "app", {name: getattr(values, name) for name in UPDATABLE}
    )
    if "status" in paths and not values.status:
        raise invalid_argument("app.status", "FIELD_REQUIRED", "status cannot be cleared")
    violations = Violations()
    _validate(values, violations, only=paths)
    violations.raise_if_any()
    app = _visible_app(uow.session, principal, app_id)
    cleaned = replace(
        values,
        name=values.name.strip(),
        requested_scopes=_unique(values.requested_scopes),
        redirect_uris=list(values.redirect_uris),
    )
    for path in paths:
        value = getattr(cleaned, path)
        setattr(app, path, list(value) if isinstance(value, list) else value)
    app.updated_at = uow.now
    return app


def delete_app(uow: UnitOfWork, principal: Principal, app_id: str) -> None:
    """Deletes an app that no merchant has installed. Its row stays (installs,
    deliveries and charges refer to it) but it is gone from every read, and its
    client credentials stop working."""
    app = _visible_app(uow.session, principal, app_id)
    # Locked as an approval locks it: one that is committing is waited for and
    # its install seen below.
    uow.session.refresh(app, with_for_update=True)
    if app.status == DELETED:
        raise not_found("app", app_id)
    installed = uow.session.scalar(
        select(InstallRecord.id)
        .where(InstallRecord.app_id == app.id, InstallRecord.status == "active")
        .limit(1)
    )
    if installed is not None:
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "APP_HAS_INSTALLS",
            "Merchants still have this app installed; disable it (status) instead",
        )
    app.status = DELETED
    app.client_secret_hash = ""
    app.redirect_uris = []
    app.updated_at = uow.now


def rotate_app_secret(uow: UnitOfWork, principal: Principal, app_id: str) -> tuple[AppRecord, str]:
    app = _visible_app(uow.session, principal, app_id)
    client_secret = _new_client_secret()
    app.client_secret_hash = credentials.hash_secret(client_secret)
    app.updated_at = uow.now
    return app, client_secret


def scope_catalog() -> tuple[scopes.ScopeInfo, ...]:
    return scopes.CATALOG
