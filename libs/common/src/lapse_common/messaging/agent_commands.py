"""Issuing signed commands to an agent's own command topic through the outbox."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from lapse_common.clock import Clock
from lapse_common.command_signing import CommandSigner
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2
from lapse_common.topics import Topics


def enqueue_agent_command(
    session: AsyncSession,
    *,
    signer: CommandSigner,
    topics: Topics,
    kind: common_pb2.CommandKind.ValueType,
    grant_id: str,
    epoch: int,
    spec: common_pb2.GrantSpec,
    request_id: str,
    producer: str,
    clock: Clock,
    end_sessions: bool = False,
) -> str:
    """Sign a command and stage it for the agent serving `spec`; returns the command id.
    `end_sessions` (revokes only) asks the agent to also end the principal's open sessions."""
    command_id = f"cmd-{uuid.uuid4()}"
    signed = signer.sign(
        commands_pb2.AgentCommand(
            command_id=command_id,
            grant_id=grant_id,
            epoch=epoch,
            kind=kind,
            spec=spec,
            issuer=producer,
            end_sessions=end_sessions,
        )
    )
    enqueue(
        session,
        topic=topics.agent_commands(spec.agent_id),
        key=grant_id,
        payload=signed,
        producer=producer,
        clock=clock,
        request_id=request_id,
        grant_id=grant_id,
    )
    return command_id
