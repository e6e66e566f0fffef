"""Accounts domain: merchants, partners and their keys."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flint.accounts import signin_throttle
from flint.accounts.models import (
    MerchantRecord,
    MerchantSessionRecord,
    PartnerRecord,
    SignInAttemptRecord,
    SignInDeviceRecord,
)
from flint.common import credentials, passwords
from flint.common.auth import Principal, PrincipalKind, refuse_other_environment
from flint.common.credentials import ApiKeyRecord
from flint.common.db import UnitOfWork
from flint.common.errors import Code, FlintError, Violations, already_exists, not_found
from flint.common.ids import new_id
from flint.common.pagination import fetch_page, parse_page
from flint.common.validation import check_email, check_text

ENVIRONMENTS = ("test", "live")
MAX_NAME_LENGTH = 200
MAX_PREVIOUS_KEY_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class IssuedKey:
    """A key just created, with the secret that is never stored."""

    record: ApiKeyRecord
    secret: str


@dataclass(frozen=True)
class MerchantWithKeys:
    merchant: MerchantRecord
    keys: list[IssuedKey]


@dataclass(frozen=True)
class PartnerWithKey:
    partner: PartnerRecord
    key: IssuedKey


# --- platform admin -------------------------------------------------------------


def create_admin_key(uow: UnitOfWork) -> IssuedKey:
    """Issues a platform admin key. Refused if one is active: rotate it instead."""
    if credentials.active_keys(uow.session, kind=credentials.KIND_ADMIN, owner_id="", now=uow.now):
        raise FlintError(
            Code.FAILED_PRECONDITION,
            "ADMIN_KEY_EXISTS",
            "An admin key already exists; use `flint admin init --rotate` to replace it",
        )
    return _issue(uow, credentials.KIND_ADMIN, "", "", credentials.ADMIN_PREFIX)


def rotate_admin_key(uow: UnitOfWork) -> IssuedKey:
    credentials.expire_active_keys(
        uow.session, kind=credentials.KIND_ADMIN, owner_id="", environment="", at=uow.now
    )
    return _issue(uow, credentials.KIND_ADMIN, "", "", credentials.ADMIN_PREFIX)


def create_internal_key(uow: UnitOfWork) -> IssuedKey:
    """A key for Flint's own services (the hosted web app). Several may be active,
    one per running hosted app; `flint up` issues its own at start."""
    return _issue(uow, credentials.KIND_INTERNAL, "", "", credentials.INTERNAL_PREFIX)


# --- merchants ------------------------------------------------------------------


def create_merchant(uow: UnitOfWork, *, name: str, email: str, password: str) -> MerchantWithKeys:
    email = email.strip().lower()
    violations = Violations()
    check_text(violations, "merchant.name", name, max_length=MAX_NAME_LENGTH, required=True)
    if not email:
        violations.add("merchant.email", "FIELD_REQUIRED", "is required")
    else:
        check_email(violations, "merchant.email", email)
    if len(password) < passwords.MIN_LENGTH:
        violations.add(
            "password",
            "PASSWORD_TOO_SHORT",
            f"must be at least {passwords.MIN_LENGTH} characters",
        )
    elif len(password) > passwords.MAX_LENGTH:
        violations.add(
            "password", "FIELD_TOO_LONG", f"must be at most {passwords.MAX_LENGTH} characters"
        )
    violations.raise_if_any()
    if uow.session.scalar(select(func.count()).where(MerchantRecord.email == email)):
        raise already_exists("merchant", "merchant.email", "A merchant with this email exists")
    merchant = MerchantRecord(
        id=new_id("mer"),
        name=name.strip(),
        email=email,
        password_hash=passwords.hash_password(password),
        created_at=uow.now,
    )
    try:
        with uow.session.begin_nested():
            uow.session.add(merchant)
    except IntegrityError:
        # Another request created a merchant with this email after our check.
        raise already_exists(
            "merchant", "merchant.email", "A merchant with this email exists"
        ) from None
    keys = [
        _issue(
            uow,
            credentials.KIND_MERCHANT,
            merchant.id,
            environment,
            credentials.MERCHANT_PREFIXES[environment],
        )
        for environment in ENVIRONMENTS
    ]
    return MerchantWithKeys(merchant, keys)


def _visible_merchant(session: Session, principal: Principal, merchant_id: str) -> MerchantRecord:
    # A merchant key sees only its own merchant; anything else is NOT_FOUND.
    if principal.kind is PrincipalKind.MERCHANT and principal.id != merchant_id:
        raise not_found("merchant", merchant_id)
    merchant = session.get(MerchantRecord, merchant_id)
    if merchant is None:
        raise not_found("merchant", merchant_id)
    return merchant


def get_merchant(session: Session, principal: Principal, merchant_id: str) -> MerchantRecord:
    return _visible_merchant(session, principal, merchant_id)


def active_merchant_keys(session: Session, merchant_id: str, now: datetime) -> list[ApiKeyRecord]:
    return credentials.active_keys(
        session, kind=credentials.KIND_MERCHANT, owner_id=merchant_id, now=now
    )


def list_merchants(
    session: Session, *, page_size: int, page_token: str
) -> tuple[list[MerchantRecord], str]:
    page = parse_page(session, page_size, page_token, context="merchants")
    return fetch_page(session, select(MerchantRecord), MerchantRecord.id, page)


def rotate_merchant_key(
    uow: UnitOfWork,
    principal: Principal,
    *,
    merchant_id: str,
    environment: str,
    previous_key_ttl_seconds: int,
) -> IssuedKey:
    violations = Violations()
    if environment not in ENVIRONMENTS:
        violations.add("environment", "INVALID_ENVIRONMENT", "must be test or live")
    _check_ttl(violations, previous_key_ttl_seconds)
    violations.raise_if_any()
    merchant = _visible_merchant(uow.session, principal, merchant_id)
    if principal.kind is PrincipalKind.MERCHANT:
        refuse_other_environment(
            principal.environment, environment, f"rotate the {environment} key"
        )
    credentials.expire_active_keys(
        uow.session,
        kind=credentials.KIND_MERCHANT,
        owner_id=merchant.id,
        environment=environment,
        at=uow.now + timedelta(seconds=previous_key_ttl_seconds),
    )
    return _issue(
        uow,
        credentials.KIND_MERCHANT,
        merchant.id,
        environment,
        credentials.MERCHANT_PREFIXES[environment],
    )


# --- partners -------------------------------------------------------------------


def create_partner(uow: UnitOfWork, *, name: str) -> PartnerWithKey:
    violations = Violations()
    check_text(violations, "partner.name", name, max_length=MAX_NAME_LENGTH, required=True)
    violations.raise_if_any()
    partner = PartnerRecord(id=new_id("par"), name=name.strip(), created_at=uow.now)
    uow.session.add(partner)
    key = _issue(uow, credentials.KIND_PARTNER, partner.id, "", credentials.PARTNER_PREFIX)
    return PartnerWithKey(partner, key)


def _visible_partner(session: Session, principal: Principal, partner_id: str) -> PartnerRecord:
    if principal.kind is PrincipalKind.PARTNER and principal.id != partner_id:
        raise not_found("partner", partner_id)
    partner = session.get(PartnerRecord, partner_id)
    if partner is None:
        raise not_found("partner", partner_id)
    return partner


def get_partner(session: Session, principal: Principal, partner_id: str) -> PartnerRecord:
    return _visible_partner(session, principal, partner_id)


def active_partner_key(session: Session, partner_id: str, now: datetime) -> ApiKeyRecord | None:
    keys = credentials.active_keys(
        session, kind=credentials.KIND_PARTNER, owner_id=partner_id, now=now
    )
    # During a rotation grace period two keys work; show the newest.
    return max(keys, key=lambda key: key.id) if keys else None


def list_partners(
    session: Session, *, page_size: int, page_token: str
) -> tuple[list[PartnerRecord], str]:
    page = parse_page(session, page_size, page_token, context="partners")
    return fetch_page(session, select(PartnerRecord), PartnerRecord.id, page)


def rotate_partner_key(
    uow: UnitOfWork, principal: Principal, *, partner_id: str, previous_key_ttl_seconds: int
) -> IssuedKey:
    violations = Violations()
    _check_ttl(violations, previous_key_ttl_seconds)
    violations.raise_if_any()
    partner = _visible_partner(uow.session, principal, partner_id)
    credentials.expire_active_keys(
        uow.session,
        kind=credentials.KIND_PARTNER,
        owner_id=partner.id,
        environment="",
        at=uow.now + timedelta(seconds=previous_key_ttl_seconds),
    )
    return _issue(uow, credentials.KIND_PARTNER, partner.id, "", credentials.PARTNER_PREFIX)


# --- merchant sessions (hosted pages) ---------------------------------------------

SESSION_TTL = timedelta(hours=12)
# A trusted device is forgotten after this long without a successful sign-in.
DEVICE_TTL = timedelta(days=90)
DEVICE_TOKEN_PREFIX = "fdv_"  # noqa: S105 - a prefix, not a secret
MAX_DEVICE_TOKEN_LENGTH = 200
# Verified against when the email is unknown, so both cases take as long.
_DUMMY_HASH = passwords.hash_password("not the password of anyone")


@dataclass(frozen=True)
class SignIn:
    merchant: MerchantRecord
    session: MerchantSessionRecord
    token: str
    # A new device token for the browser to keep; "" when its own stays valid.
    device_token: str


def sign_in(
    uow: UnitOfWork, *, email: str, password: str, client_ip: str, device_token: str = ""
) -> SignIn:
    """Checks the password and opens a session. Throttled per OWASP (see
    signin_throttle): a browser with a valid device token of this account
    counts only its own failures; any other attempt waits on its (email,
    address) and address counters. A failure is recorded (and kept) before it
    is reported, so it counts."""
    email = email.strip().lower()
    client_ip = client_ip[:64]
    merchant = uow.session.scalar(select(MerchantRecord).where(MerchantRecord.email == email))
    device = _trusted_device(uow, merchant, device_token)
    if device is not None:
        wait = signin_throttle.device_wait(
            uow.session, device_id=device.id, last_success_at=device.last_success_at, now=uow.now
        )
    else:
        wait = signin_throttle.untrusted_wait(
            uow.session, email=email, client_ip=client_ip, now=uow.now
        )
    if wait > timedelta(0):
        raise FlintError(
            Code.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            "Too many failed sign-ins; try again later",
            metadata={"retry_after_seconds": str(max(1, math.ceil(wait.total_seconds())))},
        )
    valid = passwords.verify_password(merchant.password_hash if merchant else _DUMMY_HASH, password)
    uow.session.add(
        SignInAttemptRecord(
            email=email,
            client_ip=client_ip,
            device_id=device.id if device else "",
            succeeded=valid and merchant is not None,
            at=uow.now,
        )
    )
    if merchant is None or not valid:
        raise FlintError(
            Code.UNAUTHENTICATED, "INVALID_CREDENTIALS", "Wrong email or password", commit=True
        )
    new_device_token = ""
    if device is not None:
        device.last_success_at = uow.now
        device.expires_at = uow.now + DEVICE_TTL
    else:
        new_device_token = _new_device(uow, merchant)
    token = credentials.generate_secret(credentials.MERCHANT_SESSION_PREFIX)
    record = MerchantSessionRecord(
        id=new_id("key"),
        merchant_id=merchant.id,
        token_hash=credentials.hash_secret(token),
        created_at=uow.now,
        expires_at=uow.now + SESSION_TTL,
        revoked_at=None,
    )
    uow.session.add(record)
    return SignIn(merchant, record, token, new_device_token)


def _trusted_device(
    uow: UnitOfWork, merchant: MerchantRecord | None, device_token: str
) -> SignInDeviceRecord | None:
    """The device of `device_token` if it is current and bound to `merchant`: a
    token of another account, an unknown or expired one is no device at all."""
    if merchant is None or not device_token or len(device_token) > MAX_DEVICE_TOKEN_LENGTH:
        return None
    device = uow.session.scalar(
        select(SignInDeviceRecord).where(
            SignInDeviceRecord.token_hash == credentials.hash_secret(device_token)
        )
    )
    if device is None or device.merchant_id != merchant.id or device.expires_at <= uow.now:
        return None
    return device


def _new_device(uow: UnitOfWork, merchant: MerchantRecord) -> str:
    token = credentials.generate_secret(DEVICE_TOKEN_PREFIX)
    uow.session.add(
        SignInDeviceRecord(
            id=new_id("dev"),
            merchant_id=merchant.id,
            token_hash=credentials.hash_secret(token),
            created_at=uow.now,
            last_success_at=uow.now,
            expires_at=uow.now + DEVICE_TTL,
        )
    )
    return token


def sign_out(uow: UnitOfWork, principal: Principal) -> None:
    uow.session.execute(
        update(MerchantSessionRecord)
        .where(MerchantSessionRecord.id == principal.credential_id)
        .values(revoked_at=uow.now)
    )


# --- helpers --------------------------------------------------------------------


def _check_ttl(violations: Violations, seconds: int) -> None:
    if not 0 <= seconds <= MAX_PREVIOUS_KEY_TTL_SECONDS:
        violations.add(
            "previous_key_ttl_seconds",
            "OUT_OF_RANGE",
            f"must be between 0 and {MAX_PREVIOUS_KEY_TTL_SECONDS}",
        )


def _issue(uow: UnitOfWork, kind: str, owner_id: str, environment: str, prefix: str) -> IssuedKey:
    record, secret = credentials.issue_key(
        uow.session,
        kind=kind,
        owner_id=owner_id,
        environment=environment,
        prefix=prefix,
        now=uow.now,
    )
    return IssuedKey(record, secret)
