"""The revoker's tables: one revocation per grant and the history of its attempts."""

from __future__ import annotations

from datetime import datetime, timedelta
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
OPEN_STATES = frozenset(
    {RevocationState.AWAITING_ACK, RevocationState.BACKING_OFF, RevocationState.QUEUED}
)
# Nothing changes these any more, whatever the agent or a revoke request says later.
FINAL_STATES = frozenset(
    {RevocationState.CONFIRMED, RevocationState.CANCELED, RevocationState.RELEASED}
)
# Still to be revoked: open, or stuck waiting for an operator.
UNFINISHED_STATES = OPEN_STATES | {RevocationState.DEAD_LETTERED}
STUCK_STATES = frozenset({RevocationState.DEAD_LETTERED})


class RevocationTransitionRefused(Exception):
    """A transition asked of a revocation in a state it may not be taken from. The use cases
    look at the state before they ask, so this is a bug in the caller (and rolls its
    transaction back), not a refusal to report to a client."""


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

    # The transitions. Each sets every field it owns; the timers (deadline_at,
    # next_attempt_at, queued_at) are set by every state change, so a state never keeps the
    # timer of the state it left.

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def take_over(self, *, epoch: int) -> None:
        """A revoke request of a newer epoch takes this unfinished revocation over: its
        commands carry the new epoch and its attempts count from zero again. The caller then
        sends or queues it (or releases it)."""
        self._require("take over", UNFINISHED_STATES)
        if epoch <= self.epoch:
            raise RevocationTransitionRefused(
                f"revocation of grant {self.grant_id} is at epoch {self.epoch}; "
                f"epoch {epoch} cannot take it over"
            )
        self.epoch = epoch
        self.attempt = 0

    def send(self, *, command_id: str, deadline_at: datetime) -> None:
        """The next attempt's command `command_id` is out to the agent: wait for its
        verified ack until `deadline_at`. The revocation holds one in-flight slot of its
        agent while AWAITING_ACK."""
        self._require("send", UNFINISHED_STATES)
        self.attempt += 1
        self.command_id = command_id
        self._enter(RevocationState.AWAITING_ACK, deadline_at=deadline_at)

    def queue(self, *, now: datetime) -> None:
        """The agent has no free in-flight slot: wait in its queue (oldest `queued_at`
        first) until one frees up."""
        self._require("queue", UNFINISHED_STATES)
        self._enter(RevocationState.QUEUED, queued_at=now)

    def confirm(self, *, now: datetime) -> None:
        """The agent verified the access is gone: the grant is REVOKED. Allowed from
        DEAD_LETTERED too, since a verified removal that arrives late is still the truth."""
        self._require("confirm", UNFINISHED_STATES)
        self.confirmed_at = now
        self._enter(RevocationState.CONFIRMED)

    def release(self, *, now: datetime) -> None:
        """Another active grant covers the same access: this grant's claim ends and nothing
        is removed from the target (the covering grant's own end removes it)."""
        self._require("release", UNFINISHED_STATES)
        self.confirmed_at = now
        self._enter(RevocationState.RELEASED)

    def back_off(self, *, error: str, now: datetime, delay: timedelta) -> None:
        """The current attempt failed with `error` (or missed its ack deadline): the next
        one goes out after `delay`; meanwhile the agent's in-flight slot is free."""
        self._require("back off", OPEN_STATES)
        self.last_error = error
        self._enter(RevocationState.BACKING_OFF, next_attempt_at=now + delay)

    def dead_letter(self, *, error: str, now: datetime) -> None:
        """Out of attempts, or failed permanently with `error`: stop retrying; the grant is
        REVOKING + stuck until an operator replays or cancels it."""
        self._require("dead-letter", OPEN_STATES)
        self.last_error = error
        self.dead_lettered_at = now
        self._enter(RevocationState.DEAD_LETTERED)

    def replay(self, *, operator: str, reason: str) -> None:
        """An operator replays the stuck revocation: a new epoch, so the agent and everyone
        else can tell its attempts from the abandoned ones, and attempts and error start
        afresh. It stays DEAD_LETTERED until the caller sends or queues it."""
        self._require("replay", STUCK_STATES)
        self.epoch += 1
        self.attempt = 0
        self.last_error = ""
        self.resolved_by = operator
        self.resolution_reason = reason

    def cancel(self, *, operator: str, reason: str) -> None:
        """An operator gives up on the stuck revocation: REVOKE_CANCELED, which never claims
        the access is gone. The new epoch makes any late answer to the abandoned commands
        irrelevant."""
        self._require("cancel", STUCK_STATES)
        self.epoch += 1
        self.resolved_by = operator
        self.resolution_reason = reason
        self._enter(RevocationState.CANCELED)

    def _require(self, transition: str, allowed: frozenset[RevocationState]) -> None:
        if self.state not in allowed:
            raise RevocationTransitionRefused(
                f"cannot {transition} the revocation of grant {self.grant_id}: it is "
                f"{self.state}, and only {', '.join(sorted(allowed))} may"
            )

    def _enter(
        self,
        state: RevocationState,
        *,
        deadline_at: datetime | None = None,
        next_attempt_at: datetime | None = None,
        queued_at: datetime | None = None,
    ) -> None:
        self.state = state
        self.deadline_at = deadline_at
        self.next_attempt_at = next_attempt_at
        self.queued_at = queued_at


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
