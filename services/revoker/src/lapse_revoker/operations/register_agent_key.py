"""Enroll an agent, or rotate its key: the registry row and the AgentRegistrationChanged
every verifier reads, in one transaction. From then on only reports signed by this key
count as that agent's."""

from __future__ import annotations

from lapse_common.agent_reports import key_id_of
from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics, validate_agent_id
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import AgentEnrollment, EnrolledAgent

# An Ed25519 public key in PEM is 113 bytes; anything much longer is not one.
MAX_PUBLIC_KEY_PEM = 1024


async def register_agent_key(
    *,
    session: AsyncSession,
    agent_id: str,
    public_key_pem: str,
    rotate: bool,
    actor: str,
    topics: Topics,
    clock: Clock,
) -> EnrolledAgent:
    try:
        validate_agent_id(agent_id)
    except ValueError as error:
        raise Refused(Refusal.INVALID, str(error)) from error
    if len(public_key_pem) > MAX_PUBLIC_KEY_PEM:
        raise Refused(
            Refusal.INVALID,
            f"public_key_pem is {len(public_key_pem)} bytes; an Ed25519 key in PEM is about 113",
        )
    try:
        key_id = key_id_of(public_key_pem.encode())
    except ValueError as error:
        raise Refused(Refusal.INVALID, f"public_key_pem: {error}") from error
    agent = await session.get(EnrolledAgent, agent_id, with_for_update=True)
    enrolled = agent is not None and agent.status == AgentEnrollment.ENROLLED
    if rotate and not enrolled:
        raise Refused(Refusal.NOT_FOUND, f"agent {agent_id} is not enrolled: enroll it first")
    if not rotate and enrolled and agent is not None and agent.key_id == key_id:
        return agent  # the same enrollment again (a retried `lapse agents enroll`)
    if not rotate and enrolled:
        raise Refused(
            Refusal.ALREADY_EXISTS,
            f"agent {agent_id} is enrolled already with another key: rotate its key instead",
        )
    if agent is None:
        agent = EnrolledAgent(agent_id=agent_id)
        session.add(agent)
    agent.status = AgentEnrollment.ENROLLED
    agent.key_id = key_id
    agent.public_key_pem = public_key_pem
    agent.changed_at = clock.now()
    agent.changed_by = actor
    agent.reason = ""
    publish_registration(
        session,
        agent=agent,
        change=events_pb2.AGENT_REGISTRATION_CHANGE_KEY_ROTATED
        if rotate
        else events_pb2.AGENT_REGISTRATION_CHANGE_ENROLLED,
        topics=topics,
        clock=clock,
    )
    return agent


def publish_registration(
    session: AsyncSession,
    *,
    agent: EnrolledAgent,
    change: events_pb2.AgentRegistrationChange.ValueType,
    topics: Topics,
    clock: Clock,
) -> None:
    enqueue(
        session,
        topic=topics.agent_registry,
        key=agent.agent_id,
        payload=events_pb2.AgentRegistrationChanged(
            agent_id=agent.agent_id,
            change=change,
            key_id=agent.key_id,
            public_key_pem=agent.public_key_pem,
            actor=agent.changed_by,
            reason=agent.reason,
        ),
        producer="revoker",
        clock=clock,
    )
