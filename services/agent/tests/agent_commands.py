"""Building the commands the platform would send, and handing them to the agent one at a
time, for the agent's tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from lapse_agent.operations.execute_command import execute_commands
from lapse_agent.operations.receive_command import receive_commands
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

AGENT_ID = "agent-under-test"
INTEGRATION_ID = "demo-pg"

CommandFactory = Callable[..., commands_pb2.AgentCommand]


def build_command(
    *,
    kind: common_pb2.CommandKind.ValueType = common_pb2.COMMAND_KIND_GRANT,
    grant_id: str = "grant-1",
    epoch: int = 1,
    command_id: str | None = None,
    agent_id: str = AGENT_ID,
    integration_id: str = INTEGRATION_ID,
    resource: str = "appdb",
    permission: str = "read",
    principal: str = "alice",
    end_sessions: bool = False,
) -> commands_pb2.AgentCommand:
    return commands_pb2.AgentCommand(
        command_id=command_id or str(uuid.uuid4()),
        grant_id=grant_id,
        epoch=epoch,
        kind=kind,
        spec=common_pb2.GrantSpec(
            integration_id=integration_id,
            agent_id=agent_id,
            resource=resource,
            permission=permission,
            principal=principal,
        ),
        issuer="test",
        end_sessions=end_sessions,
    )


async def execute_one(
    *, command: commands_pb2.AgentCommand, **context: Any
) -> events_pb2.AgentResult:
    """`execute_commands` for a batch of one, without a concurrency limit."""
    [result] = await execute_commands(commands=[command], limits={}, **context)
    return result


async def receive_one(
    *, payload: commands_pb2.SignedCommand | commands_pb2.AgentCommand, **context: Any
) -> events_pb2.AgentResult:
    """`receive_commands` for a batch of one, without a concurrency limit."""
    [result] = await receive_commands(payloads=[payload], limits={}, **context)
    return result
