"""Disable an agent: its key leaves the registry, so nothing it sends counts any more (its
Kafka credential is removed by the admin tooling, `lapse agents disable`)."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import AgentEnrollment, EnrolledAgent
from lapse_revoker.operations.register_agent_key import publish_registration


async def disable_agent(
    *,
    session: AsyncSession,
    agent_id: str,
    reason: str,
    actor: str,
    topics: Topics,
    clock: Clock,
) -> EnrolledAgent:
    agent = await session.get(EnrolledAgent, agent_id, with_for_update=True)
    if agent is None or agent.status != AgentEnrollment.ENROLLED:
        raise Refused(Refusal.NOT_FOUND, f"agent {agent_id!r} is not enrolled")
    agent.status = AgentEnrollment.DISABLED
    agent.key_id = ""
    agent.public_key_pem = ""
    agent.changed_at = clock.now()
    agent.changed_by = actor
    agent.reason = reason[:1000]
    publish_registration(
        session,
        agent=agent,
        change=events_pb2.AGENT_REGISTRATION_CHANGE_DISABLED,
        topics=topics,
        clock=clock,
    )
    return agent
