"""The scheduler's tables: grants and their durable expiry timers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class SchedulerBase(DeclarativeBase):
    pass


class GrantState:
    GRANTING = "GRANTING"
    ACTIVE = "ACTIVE"
    GRANT_FAILED = "GRANT_FAILED"
    # The expiry (or another reason) fired and the revoker owns the revocation now.
    REVOKE_REQUESTED = "REVOKE_REQUESTED"


class Grant(SchedulerBase):
    __tablename__ = "grants"
    __table_args__ = (
        Index("ix_grants_due", "status", "expires_at"),
        Index("ix_grants_remind", "status", "remind_at"),
        Index("ix_grants_access", "principal", "integration_id", "resource", "permission"),
    )

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(255))
    integration_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(String(255))
    permission: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(BigInteger)
    duration_seconds: Mapped[int] = mapped_column(BigInteger)
    command_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    granted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoke_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # When to tell the requester the grant ends soon; re-armed whenever expires_at moves and
    # cleared once the reminder is sent, so each expiry is announced once.
    remind_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    # W3C trace context of the request that created the grant, so the expiry (a timer with
    # no caller) continues the same trace.
    trace_context: Mapped[str] = mapped_column(Text, default="{}")
