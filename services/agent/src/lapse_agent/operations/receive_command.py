"""Records from the command topic, already decoded: authenticate each, then execute or
refuse. Always yields the AgentResults to publish; nothing runs unless authenticated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from lapse_common.clock import Clock
from lapse_common.command_signing import CommandVerifier
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from lapse_agent.connectors.base import Connector
from lapse_agent.ledger import CommandLedger
from lapse_agent.operations.authenticate_command import CommandRefused, authenticate_command
from lapse_agent.operations.execute_command import execute_commands
from lapse_agent.principal_rules import PrincipalRules
from lapse_agent.results import agent_result

logger = logging.getLogger(__name__)


def _refusal(
    *, claimed: commands_pb2.AgentCommand, reason: str, agent_id: str, clock: Clock
) -> events_pb2.AgentResult:
    logger.warning(
        "refused command %s for grant %s: %s",
        claimed.command_id or "?",
        claimed.grant_id or "?",
        reason,
    )
    return agent_result(
        command=claimed,
        agent_id=agent_id,
        outcome=events_pb2.RESULT_OUTCOME_REJECTED,
        detail=reason,
        completed_at=clock.now(),
    )


async def receive_commands(
    *,
    payloads: Sequence[commands_pb2.SignedCommand | commands_pb2.AgentCommand],
    agent_id: str,
    verifier: CommandVerifier,
    connectors: Mapping[str, Connector],
    principal_rules: Mapping[str, PrincipalRules],
    ledger: CommandLedger,
    clock: Clock,
    limits: Mapping[str, asyncio.Semaphore],
) -> list[events_pb2.AgentResult]:
    """One AgentResult per payload, in order: refused, or executed (`execute_commands`)."""
    answers: list[events_pb2.AgentResult | commands_pb2.AgentCommand] = [
        _authenticated_or_refusal(payload, agent_id=agent_id, verifier=verifier, clock=clock)
        for payload in payloads
    ]
    accepted = [answer for answer in answers if isinstance(answer, commands_pb2.AgentCommand)]
    executed = iter(
        await execute_commands(
            commands=accepted,
            agent_id=agent_id,
            connectors=connectors,
            principal_rules=principal_rules,
            ledger=ledger,
            clock=clock,
            limits=limits,
        )
    )
    results: list[events_pb2.AgentResult] = []
    for answer in answers:
        if isinstance(answer, events_pb2.AgentResult):
            results.append(answer)
            continue
        result = next(executed)
        logger.info(
            "command %s (%s) for grant %s epoch %s: %s changed=%s verified=%s: %s",
            answer.command_id,
            common_pb2.CommandKind.Name(answer.kind),
            answer.grant_id,
            answer.epoch,
            events_pb2.ResultOutcome.Name(result.outcome),
            result.changed,
            result.verified,
            result.detail,
        )
        results.append(result)
    return results


def _authenticated_or_refusal(
    payload: commands_pb2.SignedCommand | commands_pb2.AgentCommand,
    *,
    agent_id: str,
    verifier: CommandVerifier,
    clock: Clock,
) -> commands_pb2.AgentCommand | events_pb2.AgentResult:
    if isinstance(payload, commands_pb2.AgentCommand):
        # A bare AgentCommand has no signature at all; answer rather than quarantine so
        # the sender learns why nothing happened.
        return _refusal(
            claimed=payload,
            reason="rejected: command is not signed (bare AgentCommand)",
            agent_id=agent_id,
            clock=clock,
        )
    try:
        return authenticate_command(signed=payload, verifier=verifier, agent_id=agent_id)
    except CommandRefused as refused:
        return _refusal(
            claimed=refused.claimed, reason=refused.reason, agent_id=agent_id, clock=clock
        )
