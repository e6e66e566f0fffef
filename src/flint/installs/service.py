"""Installs domain: what a merchant has installed, and revoking it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flint.apps.models import AppRecord
from flint.billing.charges import freeze_for_install as freeze_app_charges
from flint.common.auth import Principal, PrincipalKind, refuse_other_environment
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, invalid_argument, not_found
from flint.common.events import record_event
from flint.common.pagination import fetch_page, parse_page
from flint.installs import presenter, tokens
from flint.installs.models import GrantRecord, InstallRecord, TokenFamilyRecord

ENVIRONMENTS = ("test", "live")


@dataclass
class InstallView:
    install: InstallRecord
    grants: list[GrantRecord]
    app_name: str

    def grant(self, environment: str) -> GrantRecord | None:
        return next((g for g in self.grants if g.environment == environment), None)

    @property
    def status(self) -> str:
        return presenter.install_status(self.install, self.grants)


def load_view(session: Session, install: InstallRecord) -> InstallView:
    grants = list(session.scalars(select(GrantRecord).where(GrantRecord.install_id == install.id)))
    app_name = session.scalar(select(AppRecord.name).where(AppRecord.id == install.app_id))
    return InstallView(install, grants, app_name or "")


def _visibility(principal: Principal) -> list[object]:
    """Where-clauses that limit installs to what the principal may see."""
    if principal.kind is PrincipalKind.ADMIN:
        return []
    if principal.kind in (PrincipalKind.MERCHANT, PrincipalKind.MERCHANT_SESSION):
        return [InstallRecord.merchant_id == principal.id]
    if principal.kind is PrincipalKind.PARTNER:
        owned = select(AppRecord.id).where(AppRecord.partner_id == principal.id)
        return [InstallRecord.app_id.in_(owned)]
    if principal.kind is PrincipalKind.APP:
        return [InstallRecord.id == principal.id]
    return [InstallRecord.id.is_(None)]


def _visible_install(
    session: Session, principal: Principal, install_id: str, *, lock: bool = False
) -> InstallRecord:
    query = select(InstallRecord).where(InstallRecord.id == install_id, *_visibility(principal))  # type: ignore[arg-type]
    if lock:
        query = query.with_for_update()
    install = session.scalar(query)
    if install is None:
        raise not_found("install", install_id)
    return install


def get_install(session: Session, principal: Principal, install_id: str) -> InstallView:
    return load_view(session, _visible_install(session, principal, install_id))


def list_installs(
    session: Session, principal: Principal, *, page_size: int, page_token: str, app_id: str
) -> tuple[list[InstallView], str]:
    query = select(InstallRecord).where(*_visibility(principal))  # type: ignore[arg-type]
    if app_id:
        query = query.where(InstallRecord.app_id == app_id)
    context = f"installs:{principal.kind.value}:{principal.id}:{app_id}"
    page = parse_page(session, page_size, page_token, context=context)
    installs, token = fetch_page(session, query, InstallRecord.id, page)
    return [load_view(session, install) for install in installs], token


def record_install_event(uow: UnitOfWork, view: InstallView, type_: str, environment: str) -> None:
    record_event(
        uow,
        merchant_id=view.install.merchant_id,
        environment=environment,
        type=type_,
        object_type="install",
        object_id=view.install.id,
        object_version=view.install.version,
        data=presenter.install_json(view.install, view.grants, view.app_name),
    )


def revoke_token_families(
    uow: UnitOfWork, install_id: str, environment: str | None, reason: str
) -> None:
    query = update(TokenFamilyRecord).where(
        TokenFamilyRecord.install_id == install_id, TokenFamilyRecord.revoked_at.is_(None)
    )
    if environment is not None:
        query = query.where(TokenFamilyRecord.environment == environment)
    uow.session.execute(query.values(revoked_at=uow.now, revoke_reason=reason))
    # This process forgets cached token state at once; others within its bound.
    uow.after_commit(tokens.forget_cached_state)


def uninstall(uow: UnitOfWork, principal: Principal, install_id: str) -> InstallView:
    """Ends the install in every environment; all its tokens stop working."""
    install = _visible_install(uow.session, principal, install_id, lock=True)
    view = load_view(uow.session, install)
    if install.status == "uninstalled":
        return view
    install.status = "uninstalled"
    install.uninstalled_at = uow.now
    install.updated_at = uow.now
    install.version += 1
    had_grant = [g.environment for g in view.grants if g.status == "active"]
    for grant in view.grants:
        if grant.status == "active":
            grant.revoked_at = uow.now
        grant.status = "uninstalled"
    revoke_token_families(uow, install.id, None, "uninstalled")
    freeze_app_charges(uow, install.id, None)
    for environment in had_grant or [g.environment for g in view.grants]:
        record_install_event(uow, view, "install.uninstalled", environment)
    return view


def revoke_grant(
    uow: UnitOfWork, principal: Principal, install_id: str, environment: str
) -> InstallView:
    if environment not in ENVIRONMENTS:
        raise invalid_argument("environment", "INVALID_ENVIRONMENT", "must be test or live")
    if principal.kind is PrincipalKind.MERCHANT:
        refuse_other_environment(
            principal.environment, environment, f"revoke the {environment} grant"
        )
    install = _visible_install(uow.session, principal, install_id, lock=True)
    view = load_view(uow.session, install)
    grant = view.grant(environment)
    if install.status != "active" or grant is None or grant.status != "active":
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "GRANT_NOT_ACTIVE",
            f"The install has no active {environment} grant",
            metadata={"environment": environment},
        )
    grant.status = "revoked"
    grant.revoked_at = uow.now
    install.version += 1
    install.updated_at = uow.now
    revoke_token_families(uow, install.id, environment, "grant_revoked")
    freeze_app_charges(uow, install.id, environment)
    record_install_event(uow, view, "install.grant_revoked", environment)
    return view
