"""An agent answered a revoke command. Only a verified removal makes the grant REVOKED."""

from __future__ import annotations

from lapse_common.clock import as_utc
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.grant_facts import enqueue_grant_fact
from lapse_revoker.models import Revocation, RevocationState, RevokeAttemptRecord
from lapse_revoker.operations.fail_revoke_attempt import fail_revoke_attempt
from lapse_revoker.revoke_commands import promote_queued
from lapse_revoker.revoker_context import RevokerContext

_meter = metrics.get_meter("lapse.revoker")
_lateness = _meter.create_histogram(
    "lapse.revocation.lateness", unit="s", description="verified revoke ack time minus due time"
)


async def record_revoke_result(
    *, session: AsyncSession, result: events_pb2.AgentResult, ctx: RevokerContext
) -> None:
    if result.kind != common_pb2.COMMAND_KIND_REVOKE:
        return
    attempt, revocation = _the_command_it_answers(
        result,
        await session.get(RevokeAttemptRecord, result.command_id),
        await session.get(Revocation, result.grant_id, with_for_update=True),
    )
    if result.epoch != revocation.epoch:
        # The answer to a command of an earlier epoch: a newer revoke request took over.
        return
    if revocation.is_final:
        return
    now = ctx.clock.now()
    succeeded = result.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED and result.verified
    if attempt.finished_at is None:
        attempt.finished_at = now
        if not succeeded:
            attempt.error = _describe_failure(result)
    if succeeded:
        # Also for a DEAD_LETTERED one: a verified removal that arrived late is the truth.
        revocation.confirm(now=now)
        _lateness.record((now - as_utc(revocation.due_at)).total_seconds())
        enqueue_grant_fact(
            session,
            revocation=revocation,
            status=common_pb2.GRANT_STATUS_REVOKED,
            detail=result.detail or "agent verified the access is gone",
            ctx=ctx,
            actor=revocation.actor,
        )
        await promote_queued(session, agent_id=revocation.agent_id, ctx=ctx)
        return
    if revocation.state == RevocationState.DEAD_LETTERED:
        return
    if result.command_id != revocation.command_id:
        # A late failure of an earlier attempt: the current attempt is still running.
        return
    await fail_revoke_attempt(
        session=session,
        revocation=revocation,
        error=_describe_failure(result),
        permanent=result.outcome == events_pb2.RESULT_OUTCOME_FAILED_PERMANENT,
        ctx=ctx,
    )
    await promote_queued(session, agent_id=revocation.agent_id, ctx=ctx)


def _the_command_it_answers(
    result: events_pb2.AgentResult,
    attempt: RevokeAttemptRecord | None,
    revocation: Revocation | None,
) -> tuple[RevokeAttemptRecord, Revocation]:
    """A result counts only as the answer to a revoke command this revoker sent: that command
    id, for that grant and epoch, from the agent it was sent to. Anything else (a made-up
    command id, another grant's command, another agent) is refused and quarantined, and
    changes nothing."""
    if attempt is None or revocation is None:
        raise RefusedMessage(
            f"revoke result for grant {result.grant_id!r} answers no revoke command the "
            f"revoker sent (command id {result.command_id!r} is unknown)"
        )
    if (attempt.grant_id, attempt.epoch) != (result.grant_id, result.epoch):
        raise RefusedMessage(
            f"revoke result names grant {result.grant_id!r} epoch {result.epoch}, but command "
            f"{result.command_id!r} was sent for grant {attempt.grant_id!r} epoch {attempt.epoch}"
        )
    if result.agent_id != revocation.agent_id:
        raise RefusedMessage(
            f"revoke result for grant {result.grant_id!r} comes from agent {result.agent_id!r}, "
            f"but its command was sent to agent {revocation.agent_id!r}"
        )
    return attempt, revocation


def _describe_failure(result: events_pb2.AgentResult) -> str:
    if result.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED and not result.verified:
        return f"agent acked without verifying the access is gone: {result.detail}"
    outcome = events_pb2.ResultOutcome.Name(result.outcome).removeprefix("RESULT_OUTCOME_")
    return f"{outcome}: {result.detail}"
