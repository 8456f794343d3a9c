"""Steps shared by the revoker's use cases: sending an attempt and publishing facts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from lapse_common.clock import Clock, as_utc
from lapse_common.command_signing import CommandSigner
from lapse_common.db import dialect_of
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.agent_commands import enqueue_agent_command
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.telemetry import continued_trace
from lapse_common.topics import Topics
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation, RevocationState, RevokeAttemptRecord


@dataclass(frozen=True)
class RetryPolicy:
    ack_deadline: timedelta
    max_attempts: int
    backoff_initial: timedelta
    backoff_max: timedelta
    jitter_ratio: float

    def backoff(self, attempt: int) -> timedelta:
        """Exponential backoff after `attempt` failed, with jitter so that many
        revocations failing together do not retry in lockstep."""
        base = min(
            self.backoff_max.total_seconds(),
            self.backoff_initial.total_seconds() * (2 ** max(0, attempt - 1)),
        )
        return timedelta(seconds=base * (1 + random.uniform(0, self.jitter_ratio)))


@dataclass(frozen=True)
class RevokerContext:
    signer: CommandSigner
    topics: Topics
    clock: Clock
    policy: RetryPolicy
    max_in_flight_per_agent: int = 100


def spec_of(revocation: Revocation) -> common_pb2.GrantSpec:
    return grant_spec_of(revocation)


def send_attempt(session: AsyncSession, *, revocation: Revocation, ctx: RevokerContext) -> None:
    now = ctx.clock.now()
    with continued_trace(revocation.trace_context):
        command_id = enqueue_agent_command(
            session,
            signer=ctx.signer,
            topics=ctx.topics,
            kind=common_pb2.COMMAND_KIND_REVOKE,
            grant_id=revocation.grant_id,
            epoch=revocation.epoch,
            spec=spec_of(revocation),
            request_id=revocation.request_id,
            producer="revoker",
            clock=ctx.clock,
            end_sessions=revocation.end_sessions,
        )
    revocation.send(command_id=command_id, deadline_at=now + ctx.policy.ack_deadline)
    session.add(
        RevokeAttemptRecord(
            command_id=revocation.command_id,
            grant_id=revocation.grant_id,
            attempt=revocation.attempt,
            epoch=revocation.epoch,
            sent_at=now,
        )
    )


async def in_flight(session: AsyncSession, *, agent_id: str) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Revocation)
        .where(
            Revocation.agent_id == agent_id,
            Revocation.state == RevocationState.AWAITING_ACK,
        )
    )
    return int(count or 0)


async def dispatch(session: AsyncSession, *, revocation: Revocation, ctx: RevokerContext) -> bool:
    """Send the next attempt if the agent has a free in-flight slot, else queue it.
    Returns True when a command went out."""
    if await in_flight(session, agent_id=revocation.agent_id) >= ctx.max_in_flight_per_agent:
        revocation.queue(now=ctx.clock.now())
        return False
    send_attempt(session, revocation=revocation, ctx=ctx)
    return True


async def promote_queued(session: AsyncSession, *, agent_id: str, ctx: RevokerContext) -> int:
    """Fill the agent's free in-flight slots with its oldest queued revocations."""
    await session.flush()
    free = ctx.max_in_flight_per_agent - await in_flight(session, agent_id=agent_id)
    if free <= 0:
        return 0
    query = (
        select(Revocation)
        .where(Revocation.agent_id == agent_id, Revocation.state == RevocationState.QUEUED)
        .order_by(Revocation.queued_at)
        .limit(free)
    )
    if dialect_of(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    queued = (await session.execute(query)).scalars().all()
    for revocation in queued:
        send_attempt(session, revocation=revocation, ctx=ctx)
    return len(queued)


def enqueue_grant_fact(
    session: AsyncSession,
    *,
    revocation: Revocation,
    status: common_pb2.GrantStatus.ValueType,
    detail: str,
    ctx: RevokerContext,
    stuck: bool = False,
    actor: str | None = None,
) -> None:
    enqueue(
        session,
        topic=ctx.topics.grants,
        key=revocation.grant_id,
        payload=events_pb2.GrantStatusChanged(
            grant_id=revocation.grant_id,
            request_id=revocation.request_id,
            status=status,
            epoch=revocation.epoch,
            spec=spec_of(revocation),
            requester=revocation.requester,
            reason=revocation.reason,  # type: ignore[arg-type]
            actor=actor if actor is not None else revocation.actor,
            detail=detail,
            stuck=stuck,
        ),
        producer="revoker",
        clock=ctx.clock,
        request_id=revocation.request_id,
        grant_id=revocation.grant_id,
    )


def attempts_of(
    attempts: list[RevokeAttemptRecord],
) -> list[events_pb2.RevokeAttempt]:
    rendered = []
    for row in sorted(attempts, key=lambda a: (a.epoch, a.attempt)):
        attempt = events_pb2.RevokeAttempt(attempt=row.attempt, error=row.error)
        attempt.sent_at.FromDatetime(as_utc(row.sent_at))
        if row.finished_at is not None:
            attempt.finished_at.FromDatetime(as_utc(row.finished_at))
        rendered.append(attempt)
    return rendered


def dead_letter_record(
    *,
    revocation: Revocation,
    attempts: list[RevokeAttemptRecord],
    agent_last_seen_at: datetime | None,
) -> events_pb2.RevocationDeadLettered:
    record = events_pb2.RevocationDeadLettered(
        grant_id=revocation.grant_id,
        request_id=revocation.request_id,
        epoch=revocation.epoch,
        spec=spec_of(revocation),
        last_error=revocation.last_error,
        requester=revocation.requester,
        reason=revocation.reason,  # type: ignore[arg-type]
        attempts=attempts_of(attempts),
    )
    record.first_due_at.FromDatetime(as_utc(revocation.due_at))
    if agent_last_seen_at is not None:
        record.agent_last_seen_at.FromDatetime(as_utc(agent_last_seen_at))
    return record
