"""Steps shared by the revoker's use cases: sending an attempt and publishing facts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from lapse_common.clock import Clock, as_utc
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.agent_commands import enqueue_agent_command
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
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


def spec_of(revocation: Revocation) -> common_pb2.GrantSpec:
    return common_pb2.GrantSpec(
        integration_id=revocation.integration_id,
        agent_id=revocation.agent_id,
        resource=revocation.resource,
        permission=revocation.permission,
        principal=revocation.principal,
    )


def send_attempt(session: AsyncSession, *, revocation: Revocation, ctx: RevokerContext) -> None:
    now = ctx.clock.now()
    revocation.attempt += 1
    revocation.command_id = enqueue_agent_command(
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
    )
    revocation.state = RevocationState.AWAITING_ACK
    revocation.deadline_at = now + ctx.policy.ack_deadline
    revocation.next_attempt_at = None
    session.add(
        RevokeAttemptRecord(
            command_id=revocation.command_id,
            grant_id=revocation.grant_id,
            attempt=revocation.attempt,
            epoch=revocation.epoch,
            sent_at=now,
        )
    )


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


def dead_letter_record(
    *, revocation: Revocation, attempts: list[RevokeAttemptRecord]
) -> events_pb2.RevocationDeadLettered:
    record = events_pb2.RevocationDeadLettered(
        grant_id=revocation.grant_id,
        request_id=revocation.request_id,
        epoch=revocation.epoch,
        spec=spec_of(revocation),
        last_error=revocation.last_error,
    )
    record.first_due_at.FromDatetime(as_utc(revocation.due_at))
    for row in sorted(attempts, key=lambda a: a.attempt):
        attempt = record.attempts.add(attempt=row.attempt, error=row.error)
        attempt.sent_at.FromDatetime(as_utc(row.sent_at))
        if row.finished_at is not None:
            attempt.finished_at.FromDatetime(as_utc(row.finished_at))
    return record
