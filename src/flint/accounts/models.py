from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base


class MerchantRecord(Base):
    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Stored lower-cased, so uniqueness ignores case.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class PartnerRecord(Base):
    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class MerchantSessionRecord(Base):
    """A merchant signed in on the hosted pages."""

    __tablename__ = "merchant_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40), ForeignKey("merchants.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class SignInAttemptRecord(Base):
    """Sign-in attempts, for throttling per (email, client address), per client
    address and per trusted device (see accounts/signin_throttle.py)."""

    __tablename__ = "signin_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(254))
    client_ip: Mapped[str] = mapped_column(String(64))
    # The trusted device the attempt came with, "" for none.
    device_id: Mapped[str] = mapped_column(String(40), default="", server_default="")
    succeeded: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime]

    __table_args__ = (
        Index("ix_signin_attempts_email", "email", "at"),
        Index("ix_signin_attempts_ip", "client_ip", "at"),
        Index("ix_signin_attempts_device", "device_id", "at"),
    )


class SignInDeviceRecord(Base):
    """A browser that signed in to a merchant account before (OWASP's "device
    cookie"): it holds the token whose hash is stored here, and may keep signing
    in to that one account while other addresses are throttled."""

    __tablename__ = "signin_devices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40), ForeignKey("merchants.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    # The last successful sign-in with it; its failures since then count.
    last_success_at: Mapped[datetime]
    expires_at: Mapped[datetime]
