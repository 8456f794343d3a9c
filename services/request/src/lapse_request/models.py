"""The request service's tables: requests and the Activity read model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class RequestBase(DeclarativeBase):
    pass


class AccessRequest(RequestBase):
    __tablename__ = "access_requests"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requester: Mapped[str] = mapped_column(String(255), index=True)
    flow: Mapped[str] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    justification: Mapped[str] = mapped_column(Text, default="")
    duration_seconds: Mapped[int] = mapped_column(BigInteger)
    # The requested items as serialized lapse.v1.GrantSpec list (hex of each), small and opaque.
    items_blob: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str] = mapped_column(String(255), default="")
    decision_detail: Mapped[str] = mapped_column(Text, default="")
    # Comma-wrapped lists (",a,b,"), so a scope can match one member with LIKE '%,a,%'.
    requester_groups: Mapped[str] = mapped_column(Text, default=",")
    # Everyone whose vote approved the request: they may end its grants early.
    approvers: Mapped[str] = mapped_column(Text, default=",")


class GrantActivity(RequestBase):
    """Latest known state of one grant, as seen on lapse.grants.v1."""

    __tablename__ = "grant_activity"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(255), default="")
    integration_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(String(255))
    permission: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str] = mapped_column(String(255))
    status: Mapped[int] = mapped_column(Integer)
    stuck: Mapped[bool] = mapped_column(default=False)
    epoch: Mapped[int] = mapped_column(BigInteger)
    granted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Set when this service asked for the revocation (own revoke, scoped revoke, panic), so
    # a second ask before the revoker reports back does not send it twice.
    revoke_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # The scoped revocation (panic, offboarding, incident, scoped revoke) that ended it.
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class Lockdown(RequestBase):
    """While not lifted, new requests in its scope are refused."""

    __tablename__ = "lockdowns"

    lockdown_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The lapse.v1.AccessScope, serialized (hex).
    scope: Mapped[str] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    incident_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    lifted_by: Mapped[str] = mapped_column(String(255), default="")
    lifted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )


class AgentPresence(RequestBase):
    """When each agent last sent a heartbeat, for the panic preview."""

    __tablename__ = "agent_presence"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GrantTransition(RequestBase):
    """Every status a grant went through, in the order the facts were recorded."""

    __tablename__ = "grant_transitions"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    grant_id: Mapped[str] = mapped_column(ForeignKey("grant_activity.grant_id"), index=True)
    status: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
