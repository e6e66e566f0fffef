"""Payment links: reusable; every buyer who chooses to pay opens a fresh order and
checkout (a visit alone reads, see payments.payment_link_page)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from flint.commerce import checkout, presenter
from flint.commerce.context import BUYER, Tenant, list_scoped, load_scoped
from flint.commerce.events import emit
from flint.commerce.lines import LineInput, check_money_inputs, stored_lines
from flint.commerce.models import CheckoutSessionRecord, PaymentLinkRecord
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, Violations, not_found
from flint.common.ids import new_id
from flint.common.money import normalize_currency
from flint.common.validation import check_metadata, check_url, update_paths

MAX_LINE_ITEMS = 20
UPDATABLE = ("active", "success_url", "metadata")


def _emit(uow: UnitOfWork, tenant: Tenant, link: PaymentLinkRecord, type_: str) -> None:
    emit(
        uow,
        tenant,
        type_,
        object_type="payment_link",
        object_id=link.id,
        version=link.version,
        message=presenter.payment_link_pb(link),
    )


def create_link(
    uow: UnitOfWork,
    tenant: Tenant,
    *,
    lines: Sequence[LineInput],
    currency: str,
    success_url: str,
    metadata: dict[str, str],
) -> PaymentLinkRecord:
    violations = Violations()
    check_money_inputs(violations, "payment_link", lines, currency, max_items=MAX_LINE_ITEMS)
    check_url(violations, "payment_link.success_url", success_url, required=True)
    check_metadata(violations, "payment_link.metadata", metadata)
    violations.raise_if_any()
    link = PaymentLinkRecord(
        id=new_id("plink"),
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        line_items=stored_lines(lines),
        currency=normalize_currency(currency),
        active=True,
        success_url=success_url,
        metadata_=dict(metadata),
        version=1,
        created_at=uow.now,
        updated_at=uow.now,
    )
    uow.session.add(link)
    _emit(uow, tenant, link, "payment_link.created")
    return link


def load_link(
    session: Session, tenant: Tenant, link_id: str, *, lock: bool = False
) -> PaymentLinkRecord:
    return load_scoped(
        session, PaymentLinkRecord, tenant, link_id, resource="payment_link", lock=lock
    )


def list_links(
    session: Session, tenant: Tenant, *, page_size: int, page_token: str
) -> tuple[list[PaymentLinkRecord], str]:
    return list_scoped(
        session,
        PaymentLinkRecord,
        tenant,
        list_name="links",
        page_size=page_size,
        page_token=page_token,
    )


def update_link(
    uow: UnitOfWork,
    tenant: Tenant,
    link_id: str,
    *,
    active: bool,
    success_url: str,
    metadata: dict[str, str],
    mask: Sequence[str],
) -> PaymentLinkRecord:
    # Without a mask `active: false` cannot be told from "not given": only true counts.
    paths = update_paths(
        mask,
        UPDATABLE,
        "payment link",
        {"active": active, "success_url": success_url, "metadata": metadata},
    )
    violations = Violations()
    if "success_url" in paths:
        check_url(violations, "payment_link.success_url", success_url, required=True)
    if "metadata" in paths:
        check_metadata(violations, "payment_link.metadata", metadata)
    violations.raise_if_any()
    link = load_link(uow.session, tenant, link_id, lock=True)
    if "active" in paths:
        link.active = active
    if "success_url" in paths:
        link.success_url = success_url
    if "metadata" in paths:
        link.metadata_ = dict(metadata)
    link.version += 1
    link.updated_at = uow.now
    _emit(uow, tenant, link, "payment_link.updated")
    return link


def open_link(uow: UnitOfWork, link_id: str) -> CheckoutSessionRecord:
    """A buyer chose to pay: a fresh order and checkout session from the link."""
    link = uow.session.get(PaymentLinkRecord, link_id)
    if link is None:
        raise not_found("payment_link", link_id)
    if not link.active:
        raise FlintError(
            Code.FAILED_PRECONDITION, "PAYMENT_LINK_INACTIVE", "This payment link is not active"
        )
    tenant = Tenant(link.merchant_id, link.environment)
    session, _order = checkout.create_session(
        uow,
        tenant,
        BUYER,
        order_id="",
        lines=[
            LineInput(line["name"], line["quantity"], line["unit_amount"], line.get("sku", ""))
            for line in link.line_items
        ],
        currency=link.currency,
        success_url=link.success_url,
        cancel_url="",
        expires_at=None,
        customer_email="",
        payment_link_id=link.id,
    )
    return session
