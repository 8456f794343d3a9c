"""Carry out verified commands against their connectors, at most once per command id,
never behind a newer epoch, several at once where they concern different grants, and say
exactly what happened to each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from lapse_agent.connectors.base import (
    Access,
    Connector,
    PermanentTargetError,
    TransientTargetError,
)
from lapse_agent.ledger import (
    Admitted,
    AlreadyExecuted,
    CommandIdentity,
    CommandLedger,
    RecordedResult,
    Stale,
)
from lapse_agent.operations.guard_principal import principal_refusal
from lapse_agent.principal_rules import PrincipalRules
from lapse_agent.results import agent_result

logger = logging.getLogger(__name__)

SUCCEEDED = events_pb2.RESULT_OUTCOME_SUCCEEDED
FAILED_TRANSIENT = events_pb2.RESULT_OUTCOME_FAILED_TRANSIENT
FAILED_PERMANENT = events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
REJECTED = events_pb2.RESULT_OUTCOME_REJECTED


async def execute_commands(
    *,
    commands: Sequence[commands_pb2.AgentCommand],
    agent_id: str,
    connectors: Mapping[str, Connector],
    principal_rules: Mapping[str, PrincipalRules],
    ledger: CommandLedger,
    clock: Clock,
    limits: Mapping[str, asyncio.Semaphore],
) -> list[events_pb2.AgentResult]:
    """Run commands that `authenticate_command` accepted; one AgentResult each, in order.

    The outcome is the one running them one by one in this order would give: the ledger
    admits them in order (an older epoch behind a newer one is stale, an exact repeat is
    answered with its first result), and the commands of one grant run one after the
    other. Commands for different grants run at once, at most `limits[integration]` at a
    time on one integration (no entry: no bound).

    A grant or revoke for a principal the agent must not touch (`principal_refusal`) is a
    permanent failure, recorded like one, so a redelivery does not ask the target again.
    Outcomes are recorded in the ledger before returning (the caller publishes them and
    only then lets the offsets commit). Transient failures are not recorded as executed:
    the command did not take effect, and a redelivery or re-issue should try again.
    """
    first_copies: dict[str, commands_pb2.AgentCommand] = {}
    for command in commands:
        first_copies.setdefault(command.command_id, command)
    distinct = list(first_copies.values())
    admissions = await ledger.admit_all(
        [_identity(command) for command in distinct], now=clock.now()
    )

    results: dict[str, events_pb2.AgentResult] = {}
    admitted_by_grant: dict[str, list[commands_pb2.AgentCommand]] = {}
    for command, admission in zip(distinct, admissions, strict=True):
        if isinstance(admission, Admitted):
            admitted_by_grant.setdefault(command.grant_id, []).append(command)
        else:
            results[command.command_id] = _answer_without_running(
                command, admission, agent_id=agent_id, clock=clock
            )

    recorded: dict[str, RecordedResult] = {}

    async def run_in_order(chain: Sequence[commands_pb2.AgentCommand]) -> None:
        for command in chain:
            limit = limits.get(command.spec.integration_id)
            async with limit if limit is not None else contextlib.nullcontext():
                recorded[command.command_id] = await _run(
                    command=command,
                    agent_id=agent_id,
                    connectors=connectors,
                    principal_rules=principal_rules,
                    clock=clock,
                )

    await asyncio.gather(*(run_in_order(chain) for chain in admitted_by_grant.values()))
    await ledger.record_all(
        [
            (_identity(first_copies[command_id]), outcome)
            for command_id, outcome in recorded.items()
            if outcome.outcome != FAILED_TRANSIENT
        ]
    )
    for command_id, outcome in recorded.items():
        results[command_id] = agent_result(
            command=first_copies[command_id],
            agent_id=agent_id,
            outcome=outcome.outcome,
            changed=outcome.changed,
            verified=outcome.verified,
            detail=outcome.detail,
            completed_at=outcome.completed_at,
        )
    answered: set[str] = set()
    answers = []
    for command in commands:
        first = results[command.command_id]
        answers.append(first if command.command_id not in answered else _repeat_of(first))
        answered.add(command.command_id)
    return answers


def _repeat_of(first: events_pb2.AgentResult) -> events_pb2.AgentResult:
    """The same command twice in one batch ran once; the repeat says so, like a redelivery."""
    repeat = events_pb2.AgentResult()
    repeat.CopyFrom(first)
    repeat.changed = False
    repeat.detail = f"duplicate delivery; first result in the same batch: {first.detail}"
    return repeat


def _identity(command: commands_pb2.AgentCommand) -> CommandIdentity:
    return CommandIdentity(
        command_id=command.command_id,
        grant_id=command.grant_id,
        epoch=command.epoch,
        kind=command.kind,
    )


def _answer_without_running(
    command: commands_pb2.AgentCommand,
    admission: Stale | AlreadyExecuted,
    *,
    agent_id: str,
    clock: Clock,
) -> events_pb2.AgentResult:
    if isinstance(admission, Stale):
        return agent_result(
            command=command,
            agent_id=agent_id,
            outcome=REJECTED,
            detail=admission.reason,
            completed_at=clock.now(),
        )
    first = admission.first
    return agent_result(
        command=command,
        agent_id=agent_id,
        outcome=first.outcome,
        changed=False,
        verified=first.verified,
        completed_at=clock.now(),
        detail=f"duplicate delivery; first result at {first.completed_at.isoformat()}: "
        f"{first.detail}",
    )


async def _run(
    *,
    command: commands_pb2.AgentCommand,
    agent_id: str,
    connectors: Mapping[str, Connector],
    principal_rules: Mapping[str, PrincipalRules],
    clock: Clock,
) -> RecordedResult:
    spec = command.spec
    connector = connectors.get(spec.integration_id)
    if connector is None:
        configured = ", ".join(sorted(connectors)) or "none"
        return RecordedResult(
            outcome=FAILED_PERMANENT,
            changed=False,
            verified=False,
            completed_at=clock.now(),
            detail=f"integration {spec.integration_id!r} is not configured on agent "
            f"{agent_id} (configured: {configured})",
        )
    access = Access(resource=spec.resource, permission=spec.permission, principal=spec.principal)
    try:
        if command.kind in (common_pb2.COMMAND_KIND_GRANT, common_pb2.COMMAND_KIND_REVOKE):
            # An integration without rules of its own still gets the built-in ones.
            refusal = await principal_refusal(
                principal=spec.principal,
                rules=principal_rules.get(spec.integration_id, PrincipalRules()),
                connector=connector,
            )
            if refusal is not None:
                return RecordedResult(
                    outcome=FAILED_PERMANENT,
                    changed=False,
                    verified=False,
                    detail=refusal,
                    completed_at=clock.now(),
                )
        if command.kind == common_pb2.COMMAND_KIND_GRANT:
            return await _grant(connector, access, clock)
        if command.kind == common_pb2.COMMAND_KIND_REVOKE:
            return await _revoke(connector, access, clock, end_sessions=command.end_sessions)
        return await _discover(connector, spec, clock)
    except PermanentTargetError as failure:
        return RecordedResult(
            outcome=FAILED_PERMANENT,
            changed=False,
            verified=False,
            detail=failure.detail,
            completed_at=clock.now(),
        )
    except TransientTargetError as failure:
        return RecordedResult(
            outcome=FAILED_TRANSIENT,
            changed=False,
            verified=False,
            detail=failure.detail,
            completed_at=clock.now(),
        )
    except Exception as error:
        # A connector bug must not wedge the command topic (the record would be
        # redelivered forever); report it as retryable so the platform retries and
        # eventually dead-letters with this detail.
        logger.exception("connector %s failed unexpectedly", spec.integration_id)
        return RecordedResult(
            outcome=FAILED_TRANSIENT,
            changed=False,
            verified=False,
            completed_at=clock.now(),
            detail=f"unexpected agent error: {type(error).__name__}: {error}",
        )


async def _grant(connector: Connector, access: Access, clock: Clock) -> RecordedResult:
    change = await connector.grant(access)
    return RecordedResult(
        outcome=SUCCEEDED,
        changed=change.changed,
        verified=False,
        detail=change.note,
        completed_at=clock.now(),
    )


async def _revoke(
    connector: Connector, access: Access, clock: Clock, *, end_sessions: bool
) -> RecordedResult:
    change = await connector.revoke(access, end_sessions=end_sessions)
    # Only a read-back may claim the access is gone; the REVOKE statement succeeding is
    # not proof (another grantor, a concurrent re-grant).
    verification = await connector.verify(access)
    if verification.holds:
        return RecordedResult(
            outcome=FAILED_PERMANENT,
            changed=change.changed,
            verified=False,
            completed_at=clock.now(),
            detail=f"{change.note}; but read-back shows the access is still present: "
            f"{verification.detail}",
        )
    return RecordedResult(
        outcome=SUCCEEDED,
        changed=change.changed,
        verified=True,
        completed_at=clock.now(),
        detail=f"{change.note}; verified: {verification.detail}",
    )


async def _discover(
    connector: Connector, spec: common_pb2.GrantSpec, clock: Clock
) -> RecordedResult:
    """List what is held; with a principal in the spec, `verified` means that principal
    does NOT hold the access (the same meaning as for a revoke: verified gone)."""
    holdings = await connector.discover(resource=spec.resource, permission=spec.permission)
    held_by_principal = any(h.access.principal == spec.principal for h in holdings)
    detail = json.dumps(
        {
            "holdings": [
                {
                    "resource": h.access.resource,
                    "permission": h.access.permission,
                    "principal": h.access.principal,
                    "target_object": h.target_object,
                }
                for h in holdings
            ],
            **({"principal_holds": held_by_principal} if spec.principal else {}),
        },
        separators=(",", ":"),
    )
    return RecordedResult(
        outcome=SUCCEEDED,
        changed=False,
        verified=bool(spec.principal) and not held_by_principal,
        detail=detail,
        completed_at=clock.now(),
    )
