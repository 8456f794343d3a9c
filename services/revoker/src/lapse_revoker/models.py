"""The revoker's tables: one revocation per grant and the history of its attempts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, DateTime, Enum, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class RevokerBase(DeclarativeBase):
    pass


class RevocationState(StrEnum):
    # A command is out; waiting for the agent's verified ack until deadline_at.
    AWAITING_ACK = "AWAITING_ACK"
    # The last attempt failed; the next one goes out at next_attempt_at.
    BACKING_OFF = "BACKING_OFF"
    CONFIRMED = "CONFIRMED"
    # Retries exhausted: published to the dead-letter topic, the grant is REVOKING + stuck.
    DEAD_LETTERED = "DEAD_LETTERED"
    # Waiting for an in-flight slot of its agent (per-agent limit).
    QUEUED = "QUEUED"
    # An operator gave up on it: REVOKE_CANCELED, the access may still exist.
    CANCELED = "CANCELED"
    # Another active grant covers the same access, so nothing was removed from the target.
    RELEASED = "RELEASED"


# States in which a command is (or will be) out to the agent.
OPEN_STATES = (RevocationState.AWAITING_ACK, RevocationState.BACKING_OFF, RevocationState.QUEUED)


class Revocation(RevokerBase):
    __tablename__ = "revocations"
    __table_args__ = (
        Index("ix_revocations_deadline", "state", "deadline_at"),
        Index("ix_revocations_next_attempt", "state", "next_attempt_at"),
    )

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(255), default="")
    integration_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str] = mapped_column(String(128), index=True)
    resource: Mapped[str] = mapped_column(String(255))
    permission: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str] = mapped_column(String(255))
    epoch: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(255), default="")
    # Every command of this revocation (retries, replays) also asks the agent to end the
    # principal's open sessions: a session that did SET ROLE keeps the role until it ends.
    end_sessions: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Stored as the member's value in the same VARCHAR(32) as before the enum (no CHECK
    # constraint, no native type), so existing rows load and no migration is needed.
    state: Mapped[RevocationState] = mapped_column(
        Enum(
            RevocationState,
            native_enum=False,
            create_constraint=False,
            length=32,
            values_callable=lambda states: [state.value for state in states],
            validate_strings=True,
        )
    )
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    command_id: Mapped[str] = mapped_column(String(64), default="")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    resolved_by: Mapped[str] = mapped_column(String(255), default="")
    resolution_reason: Mapped[str] = mapped_column(Text, default="")
    # Trace context of the revoke request, so retries from the background loop stay in it.
    trace_context: Mapped[str] = mapped_column(Text, default="{}")


class RevokeAttemptRecord(RevokerBase):
    __tablename__ = "revoke_attempts"

    command_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")


class AgentPresence(RevokerBase):
    """When each agent was last heard from (heartbeats)."""

    __tablename__ = "agent_presence"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    integrations: Mapped[str] = mapped_column(Text, default="")


class AgentEnrollment:
    ENROLLED = "ENROLLED"
    DISABLED = "DISABLED"


class EnrolledAgent(RevokerBase):
    """The agent registry: each agent's signing key. The revoker owns it and publishes every
    change on lapse.agent-registry.v1, where the services that verify agents read it."""

    __tablename__ = "enrolled_agents"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(64))
    public_key_pem: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    changed_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
