"""Turn an approved request into grants and send each grant command to its agent."""

from __future__ import annotations

import uuid

from lapse_common.clock import Clock
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.agent_commands import enqueue_agent_command
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.telemetry import current_trace_context
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.grant_facts import enqueue_grant_fact
from lapse_grant_scheduler.models import Grant, GrantState


async def create_grants(
    *,
    session: AsyncSession,
    decided: events_pb2.RequestDecided,
    signer: CommandSigner,
    topics: Topics,
    clock: Clock,
) -> int:
    if decided.decision != common_pb2.REQUEST_STATUS_APPROVED:
        return 0
    existing = await session.execute(
        select(Grant.grant_id).where(Grant.request_id == decided.request_id).limit(1)
    )
    if existing.first() is not None:
        return 0
    for item in decided.items:
        grant = Grant(
            grant_id=f"grant-{uuid.uuid4()}",
            request_id=decided.request_id,
            requester=decided.requester,
            integration_id=item.integration_id,
            agent_id=item.agent_id,
            resource=item.resource,
            permission=item.permission,
            principal=item.principal,
            status=GrantState.GRANTING,
            epoch=1,
            duration_seconds=decided.duration_seconds,
            command_id="",
            created_at=clock.now(),
            trace_context=current_trace_context(),
        )
        grant.command_id = enqueue_agent_command(
            session,
            signer=signer,
            topics=topics,
            kind=common_pb2.COMMAND_KIND_GRANT,
            grant_id=grant.grant_id,
            epoch=grant.epoch,
            spec=item,
            request_id=decided.request_id,
            producer="grant-scheduler",
            clock=clock,
        )
        session.add(grant)
        enqueue_grant_fact(
            session,
            grant=grant,
            status=common_pb2.GRANT_STATUS_GRANTING,
            reason=decided.reason,
            actor=decided.decided_by,
            detail=f"grant command sent to agent {item.agent_id}",
            topics=topics,
            clock=clock,
        )
    return len(decided.items)
