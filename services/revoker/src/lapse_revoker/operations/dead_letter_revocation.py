"""Give up retrying: publish the self-contained dead letter and mark the grant stuck."""

from __future__ import annotations

import json
from datetime import datetime

from lapse_common.clock import as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.attempt_history import attempts_of
from lapse_revoker.grant_facts import enqueue_grant_fact
from lapse_revoker.models import AgentPresence, Revocation, RevokeAttemptRecord
from lapse_revoker.revoker_context import RevokerContext


async def dead_letter_revocation(
    *, session: AsyncSession, revocation: Revocation, error: str, ctx: RevokerContext
) -> None:
    revocation.dead_letter(error=error, now=ctx.clock.now())
    attempts = list(
        (
            await session.execute(
                select(RevokeAttemptRecord).where(
                    RevokeAttemptRecord.grant_id == revocation.grant_id,
                    RevokeAttemptRecord.epoch == revocation.epoch,
                )
            )
        )
        .scalars()
        .all()
    )
    presence = await session.get(AgentPresence, revocation.agent_id)
    record = _dead_letter_record(
        revocation=revocation,
        attempts=attempts,
        agent_last_seen_at=presence.last_seen_at if presence else None,
    )
    # The record is protobuf; this header lets an operator read the essentials with
    # ordinary Kafka tools (kafka-console-consumer --property print.headers=true).
    summary = {
        "grant_id": revocation.grant_id,
        "principal": revocation.principal,
        "integration": revocation.integration_id,
        "resource": revocation.resource,
        "permission": revocation.permission,
        "agent": revocation.agent_id,
        "attempts": len(attempts),
        "last_error": revocation.last_error,
        "agent_last_seen_at": presence.last_seen_at.isoformat() if presence else None,
    }
    enqueue(
        session,
        topic=ctx.topics.revoking_dead_letter,
        key=revocation.grant_id,
        payload=record,
        producer="revoker",
        clock=ctx.clock,
        request_id=revocation.request_id,
        grant_id=revocation.grant_id,
        extra_headers={"lapse-summary": json.dumps(summary)},
    )
    enqueue_grant_fact(
        session,
        revocation=revocation,
        status=common_pb2.GRANT_STATUS_REVOKING,
        detail=(
            f"revocation stuck after {revocation.attempt} attempt(s): {revocation.last_error}; "
            "replay or cancel it with `lapse revocations replay|cancel`"
        ),
        ctx=ctx,
        stuck=True,
    )


def _dead_letter_record(
    *,
    revocation: Revocation,
    attempts: list[RevokeAttemptRecord],
    agent_last_seen_at: datetime | None,
) -> events_pb2.RevocationDeadLettered:
    record = events_pb2.RevocationDeadLettered(
        grant_id=revocation.grant_id,
        request_id=revocation.request_id,
        epoch=revocation.epoch,
        spec=grant_spec_of(revocation),
        last_error=revocation.last_error,
        requester=revocation.requester,
        reason=revocation.reason,  # type: ignore[arg-type]
        attempts=attempts_of(attempts),
    )
    record.first_due_at.FromDatetime(as_utc(revocation.due_at))
    if agent_last_seen_at is not None:
        record.agent_last_seen_at.FromDatetime(as_utc(agent_last_seen_at))
    return record
