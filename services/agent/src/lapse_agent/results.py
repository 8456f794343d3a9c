"""Building the AgentResult the agent answers every command with."""

from __future__ import annotations

from datetime import datetime

from lapse_common.field_bounds import truncated
from lapse_common.pb.lapse.v1 import commands_pb2, events_pb2


def agent_result(
    *,
    command: commands_pb2.AgentCommand,
    agent_id: str,
    outcome: events_pb2.ResultOutcome.ValueType,
    detail: str,
    completed_at: datetime,
    changed: bool = False,
    verified: bool = False,
) -> events_pb2.AgentResult:
    result = events_pb2.AgentResult(
        grant_id=command.grant_id,
        epoch=command.epoch,
        command_id=command.command_id,
        kind=command.kind,
        outcome=outcome,
        changed=changed,
        verified=verified,
        # A target's error text can be long; the platform refuses a result out of bounds, and
        # a refused result would leave the command unanswered.
        detail=truncated(detail),
        agent_id=agent_id,
    )
    result.completed_at.FromDatetime(completed_at)
    return result
