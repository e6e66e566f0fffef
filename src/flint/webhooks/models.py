"""Webhook tables. Endpoint, secret, payload, delivery and attempt are separate
rows: an event's body is stored once per reader, a delivery is that body on its
way to one endpoint, and every HTTP request of it is an attempt of its own."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from flint.common.db import Base


class WebhookEndpointRecord(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(40), ForeignKey("apps.id"))
    # The app's partner, so every query is scoped by the owner in one filter.
    partner_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500))
    enabled_events: Mapped[list[str]] = mapped_column(JSON)
    environments: Mapped[list[str]] = mapped_column(JSON)
    # "enabled" or "disabled".
    status: Mapped[str] = mapped_column(String(16))
    # "" while enabled; "manual", "failing" or "gone".
    disabled_reason: Mapped[str] = mapped_column(String(16))
    disabled_at: Mapped[datetime | None]
    # Start of the current stretch of failed attempts; None after a success.
    failing_since: Mapped[datetime | None]
    # While failing, nothing more is sent to the endpoint until then (its
    # circuit breaker), so its backlog holds no delivery slot; None after a success.
    paused_until: Mapped[datetime | None]
    # Per-endpoint sequence number, for the events about it.
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_endpoints_partner", "partner_id", "app_id", "id"),
        Index("ix_webhook_endpoints_app", "app_id", "id"),
    )


class WebhookSecretRecord(Base):
    """A signing secret, sealed with the key-encryption key (it must be usable to
    sign, so it cannot be hashed). A rotated-out secret keeps signing until `expires_at`."""

    __tablename__ = "webhook_endpoint_secrets"

    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class WebhookPayloadRecord(Base):
    """The exact body sent for an event, once per reader: an event's cursor is
    bound to the install that receives it, so two apps get different bodies,
    while every endpoint of one app gets the same bytes."""

    __tablename__ = "webhook_payloads"

    event_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The receiving install; "" for app-level events and test events.
    install_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_webhook_payloads_created", "created_at"),)


class WebhookDeliveryRecord(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_endpoints.id"))
    app_id: Mapped[str] = mapped_column(String(40))
    partner_id: Mapped[str] = mapped_column(String(40))
    merchant_id: Mapped[str] = mapped_column(String(40))
    environment: Mapped[str] = mapped_column(String(8))
    event_id: Mapped[str] = mapped_column(String(40))
    install_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    # "event" (fan-out), "replay" or "test".
    origin: Mapped[str] = mapped_column(String(8))
    # "pending", "succeeded", "failed" or "skipped".
    status: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    # A worker holds the delivery until then; after it, another may retry it.
    lease_until: Mapped[datetime | None]
    lease_token: Mapped[str] = mapped_column(String(32))
    last_status_code: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        ForeignKeyConstraint(
            ["event_id", "install_id"],
            ["webhook_payloads.event_id", "webhook_payloads.install_id"],
        ),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_app", "partner_id", "app_id", "id"),
        Index("ix_webhook_deliveries_event", "event_id", "endpoint_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_completed", "completed_at"),
        # Fair claims rank each endpoint's due deliveries and count its leased
        # ones: only pending rows, not the endpoint's whole history.
        Index(
            "ix_webhook_deliveries_pending",
            "endpoint_id",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Fan-out makes exactly one delivery of an event per endpoint.
        Index(
            "uq_webhook_deliveries_fanout",
            "endpoint_id",
            "event_id",
            unique=True,
            sqlite_where=text("origin = 'event'"),
            postgresql_where=text("origin = 'event'"),
        ),
    )


class WebhookAttemptRecord(Base):
    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_deliveries.id"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # "in_progress", "succeeded", "failed" or "lost".
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    # The first bytes of the response body.
    response_body: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(String(500))

    __table_args__ = (
        Index("ix_webhook_attempts_endpoint", "endpoint_id", "started_at"),
        Index("ix_webhook_attempts_event", "event_id", "endpoint_id"),
    )
