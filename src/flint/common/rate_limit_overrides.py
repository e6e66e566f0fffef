"""Per-caller API rate limits set by the operator (`flint admin set-rate-limit`),
replacing the defaults for one caller. A caller is named by its subject, the
same string the limiter keys its buckets by (see `subject_of`):

    merchant:<merchant id>:<test|live>         a merchant's secret key
    app:<app id>:<merchant id>:<test|live>     an app's tokens on one install
    partner:<partner id>                       a partner key
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flint.accounts.models import MerchantRecord, PartnerRecord
from flint.apps.models import AppRecord
from flint.common.db import Base
from flint.common.errors import invalid_argument, not_found

# Far above any real need; keeps a typo from turning into an unlimited caller.
MAX_PER_SECOND = 100_000
ENVIRONMENTS = ("test", "live")


class RateLimitOverrideRecord(Base):
    __tablename__ = "rate_limit_overrides"

    subject: Mapped[str] = mapped_column(String(160), primary_key=True)
    reads_per_second: Mapped[int] = mapped_column(Integer)
    writes_per_second: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


def merchant_subject(merchant_id: str, environment: str) -> str:
    return f"merchant:{merchant_id}:{environment}"


def app_subject(app_id: str, merchant_id: str, environment: str) -> str:
    return f"app:{app_id}:{merchant_id}:{environment}"


def partner_subject(partner_id: str) -> str:
    return f"partner:{partner_id}"


def subject_for(
    *, merchant_id: str = "", partner_id: str = "", app_id: str = "", environment: str = ""
) -> str:
    """The subject the operator names with flags; refuses combinations that name
    no caller."""
    if partner_id:
        if merchant_id or app_id or environment:
            raise invalid_argument(
                "partner", "RATE_LIMIT_SUBJECT_INVALID", "a partner limit takes no other ids"
            )
        return partner_subject(partner_id)
    if not merchant_id:
        raise invalid_argument(
            "merchant", "RATE_LIMIT_SUBJECT_INVALID", "name a --partner, or a --merchant"
        )
    if environment not in ENVIRONMENTS:
        raise invalid_argument(
            "environment",
            "RATE_LIMIT_SUBJECT_INVALID",
            "merchant and app limits are per environment: test or live",
        )
    if app_id:
        return app_subject(app_id, merchant_id, environment)
    return merchant_subject(merchant_id, environment)


def require_callers_exist(
    session: Session, *, merchant_id: str = "", partner_id: str = "", app_id: str = ""
) -> None:
    """A limit for a mistyped id would silently limit nobody: refuse it."""
    for model, resource, value in (
        (MerchantRecord, "merchant", merchant_id),
        (PartnerRecord, "partner", partner_id),
        (AppRecord, "app", app_id),
    ):
        if value and session.get(model, value) is None:
            raise not_found(resource, value)


def _checked(name: str, value: int) -> int:
    if not 1 <= value <= MAX_PER_SECOND:
        raise invalid_argument(
            name, "RATE_LIMIT_OUT_OF_RANGE", f"{name} must be between 1 and {MAX_PER_SECOND}"
        )
    return value


def set_override(
    session: Session, subject: str, *, reads: int, writes: int, now: datetime
) -> RateLimitOverrideRecord:
    record = session.get(RateLimitOverrideRecord, subject)
    if record is None:
        record = RateLimitOverrideRecord(subject=subject, created_at=now)
        session.add(record)
    record.reads_per_second = _checked("reads", reads)
    record.writes_per_second = _checked("writes", writes)
    record.updated_at = now
    return record


def clear_override(session: Session, subject: str) -> bool:
    record = session.get(RateLimitOverrideRecord, subject)
    if record is None:
        return False
    session.delete(record)
    return True


def find_override(session: Session, subject: str) -> tuple[int, int] | None:
    row = session.execute(
        select(
            RateLimitOverrideRecord.reads_per_second, RateLimitOverrideRecord.writes_per_second
        ).where(RateLimitOverrideRecord.subject == subject)
    ).first()
    return None if row is None else (row[0], row[1])
