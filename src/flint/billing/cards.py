"""Putting the merchant's card on file (from the hosted billing page)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from flint.billing.models import BillingCardRecord
from flint.billing.vault import CardVault
from flint.commerce.cards import parse_card
from flint.common.db import UnitOfWork


def set_card(
    uow: UnitOfWork,
    vault: CardVault,
    merchant_id: str,
    *,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str,
) -> BillingCardRecord:
    card = parse_card(number, exp_month, exp_year, cvc, uow.now)
    token = vault.save(card)
    record = uow.session.get(BillingCardRecord, merchant_id, with_for_update=True)
    if record is None:
        record = BillingCardRecord(merchant_id=merchant_id)
        uow.session.add(record)
    record.brand = card.brand
    record.last4 = card.last4
    record.exp_month = exp_month
    record.exp_year = exp_year
    record.token = token
    record.created_at = uow.now
    return record


def get_card(session: Session, merchant_id: str) -> BillingCardRecord | None:
    return session.get(BillingCardRecord, merchant_id)
