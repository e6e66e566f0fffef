from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base


class AppRecord(Base):
    __tablename__ = "apps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(40), ForeignKey("partners.id"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(2000))
    icon_url: Mapped[str] = mapped_column(String(2048))
    support_url: Mapped[str] = mapped_column(String(2048))
    privacy_url: Mapped[str] = mapped_column(String(2048))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    requested_scopes: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    client_id: Mapped[str] = mapped_column(String(40), unique=True)
    client_secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_apps_partner", "partner_id", "id"),)
