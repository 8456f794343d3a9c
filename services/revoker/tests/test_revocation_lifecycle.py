"""The revoker's use cases with a moving clock: only a verified ack is REVOKED; missed
deadlines and failures retry with backoff; exhausted or permanent failures dead-letter
with the whole attempt history."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.auth import ensure_keypair
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.codec import decode
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from lapse_revoker.models import Revocation, RevocationState, RevokerBase
from lapse_revoker.operations.accept_revoke_request import accept_revoke_request
from lapse_revoker.operations.record_revoke_result import record_revoke_result
from lapse_revoker.operations.resolve_stuck_revocation import (
    cancel_stuck_revocation,
    replay_stuck_revocation,
)
from lapse_revoker.operations.retry_overdue_revocations import retry_overdue_revocations
from lapse_revoker.retry_policy import RetryPolicy
from lapse_revoker.revoker_context import RevokerContext
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

SPEC = common_pb2.GrantSpec(
    integration_id="demo-pg",
    agent_id="demo-agent",
    resource="appdb",
    permission="read",
    principal="alice",
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 29, 9, 0, tzinfo=UTC))


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/r.db", schema="revoker")
    await create_schema(engine, schema="revoker", metadatas=[Base.metadata, RevokerBase.metadata])
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def ctx(tmp_path: Path, clock: ManualClock) -> RevokerContext:
    private, _ = ensure_keypair(tmp_path / "keys", "command-signing")
    policy = RetryPolicy(
        ack_deadline=timedelta(seconds=30),
        max_attempts=3,
        backoff_initial=timedelta(seconds=5),
        backoff_max=timedelta(seconds=60),
        jitter_ratio=0.2,
    )
    signer = CommandSigner(
        private_key_pem=private.read_bytes(), clock=clock, ttl=policy.ack_deadline
    )
    return RevokerContext(signer=signer, topics=Topics(), clock=clock, policy=policy)


async def drain(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, object]]:
    async with sessions() as session, session.begin():
        rows = list(
            (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
        )
        await session.execute(delete(OutboxMessage))
    return [(row.topic, decode(row.value).payload) for row in rows]


async def revocation(sessions: async_sessionmaker[AsyncSession]) -> Revocation:
    async with sessions() as session:
        return (await session.execute(select(Revocation))).scalar_one()


async def start(
    sessions: async_sessionmaker[AsyncSession],
    ctx: RevokerContext,
    epoch: int = 2,
    *,
    end_sessions: bool = False,
) -> str:
    requested = events_pb2.RevokeRequested(
        grant_id="grant-1",
        request_id="req-1",
        epoch=epoch,
        spec=SPEC,
        reason=common_pb2.REASON_EXPIRED,
        end_sessions=end_sessions,
    )
    requested.due_at.FromDatetime(ctx.clock.now())
    async with sessions() as session, session.begin():
        await accept_revoke_request(session=session, requested=requested, ctx=ctx)
    return (await revocation(sessions)).command_id


async def answer(
    sessions: async_sessionmaker[AsyncSession],
    ctx: RevokerContext,
    *,
    command_id: str,
    outcome: int = events_pb2.RESULT_OUTCOME_SUCCEEDED,
    verified: bool = True,
    epoch: int = 2,
) -> None:
    async with sessions() as session, session.begin():
        await record_revoke_result(
            session=session,
            result=events_pb2.AgentResult(
                grant_id="grant-1",
                epoch=epoch,
                command_id=command_id,
                kind=common_pb2.COMMAND_KIND_REVOKE,
                outcome=outcome,  # type: ignore[arg-type]
                verified=verified,
                detail="agent says so",
                agent_id="demo-agent",
            ),
            ctx=ctx,
        )


async def retry_pass(sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext) -> int:
    async with sessions() as session, session.begin():
        return await retry_overdue_revocations(session=session, ctx=ctx)


def commands_in(messages: list[tuple[str, object]]) -> list[commands_pb2.AgentCommand]:
    """The agent commands among the messages, opened from their signed envelopes."""
    return [
        commands_pb2.AgentCommand.FromString(payload.command)
        for _, payload in messages
        if isinstance(payload, commands_pb2.SignedCommand)
    ]


def statuses(messages: list[tuple[str, object]]) -> list[str]:
    return [
        common_pb2.GrantStatus.Name(p.status) + ("+stuck" if p.stuck else "")
        for _, p in messages
        if isinstance(p, events_pb2.GrantStatusChanged)
    ]


async def test_verified_ack_revokes(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext
) -> None:
    command_id = await start(sessions, ctx)
    sent = await drain(sessions)
    assert [t for t, _ in sent] == ["lapse.agent.demo-agent.commands.v1", "lapse.grants.v1"]
    assert isinstance(sent[0][1], commands_pb2.SignedCommand)
    assert statuses(sent) == ["GRANT_STATUS_REVOKING"]
    await answer(sessions, ctx, command_id=command_id)
    assert statuses(await drain(sessions)) == ["GRANT_STATUS_REVOKED"]
    assert (await revocation(sessions)).state == RevocationState.CONFIRMED
    await answer(sessions, ctx, command_id=command_id)
    assert await drain(sessions) == [], "a duplicate ack changes nothing"


@pytest.mark.parametrize(
    ("forged", "reason"),
    [
        ({"command_id": "cmd-made-up"}, "command id 'cmd-made-up' is unknown"),
        ({"grant_id": "grant-2"}, "answers no revoke command the revoker sent"),
        ({"epoch": 3}, "was sent for grant 'grant-1' epoch 2"),
        ({"agent_id": "far-agent"}, "comes from agent 'far-agent', but its command was sent"),
    ],
)
async def test_a_revoke_result_that_answers_no_sent_command_is_refused(
    sessions: async_sessionmaker[AsyncSession],
    ctx: RevokerContext,
    forged: dict[str, object],
    reason: str,
) -> None:
    """A verified "it is gone" that does not answer the command sent (made up, for another
    grant or epoch, from another agent) must not end a revocation while the access may still
    be in the target: it is refused, and the revocation keeps waiting for the real answer."""
    command_id = await start(sessions, ctx)
    await drain(sessions)
    fields: dict[str, object] = {
        "grant_id": "grant-1",
        "epoch": 2,
        "command_id": command_id,
        "agent_id": "demo-agent",
        **forged,
    }
    result = events_pb2.AgentResult(
        kind=common_pb2.COMMAND_KIND_REVOKE,
        outcome=events_pb2.RESULT_OUTCOME_SUCCEEDED,
        verified=True,
        changed=True,
        **fields,  # type: ignore[arg-type]
    )
    with pytest.raises(RefusedMessage, match=re.escape(reason)):
        async with sessions() as session, session.begin():
            await record_revoke_result(session=session, result=result, ctx=ctx)
    assert (await revocation(sessions)).state == RevocationState.AWAITING_ACK
    assert await drain(sessions) == []
    await answer(sessions, ctx, command_id=command_id)
    assert statuses(await drain(sessions)) == ["GRANT_STATUS_REVOKED"]


async def test_end_sessions_rides_on_every_command_of_the_revocation(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext, clock: ManualClock
) -> None:
    command_id = await start(sessions, ctx, end_sessions=True)
    first = await drain(sessions)
    assert [(c.epoch, c.end_sessions) for c in commands_in(first)] == [(2, True)]
    fact = first[-1][1]
    assert isinstance(fact, events_pb2.GrantStatusChanged)
    assert "alice's open sessions will be ended too" in fact.detail
    assert (await revocation(sessions)).end_sessions is True

    await answer(
        sessions, ctx, command_id=command_id, outcome=events_pb2.RESULT_OUTCOME_FAILED_TRANSIENT
    )
    clock.advance(timedelta(seconds=6.1))  # 5 s backoff + at most 20 % jitter
    assert await retry_pass(sessions, ctx) == 1
    retried = commands_in(await drain(sessions))
    assert [(c.epoch, c.end_sessions) for c in retried] == [(2, True)]

    await answer(
        sessions,
        ctx,
        command_id=retried[0].command_id,
        outcome=events_pb2.RESULT_OUTCOME_FAILED_PERMANENT,
    )
    await drain(sessions)
    async with sessions() as session, session.begin():
        await replay_stuck_revocation(
            session=session, grant_id="grant-1", operator="sre-1", reason="", ctx=ctx
        )
    replayed = commands_in(await drain(sessions))
    assert [(c.epoch, c.end_sessions) for c in replayed] == [(3, True)]


async def test_a_later_request_to_end_sessions_applies_to_the_open_revocation(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext, clock: ManualClock
) -> None:
    await start(sessions, ctx)
    plain = commands_in(await drain(sessions))
    assert [c.end_sessions for c in plain] == [False]
    # Same epoch (nothing else new): no new command now, but every later attempt asks.
    await start(sessions, ctx, end_sessions=True)
    assert await drain(sessions) == []
    clock.advance(timedelta(seconds=30))
    await retry_pass(sessions, ctx)  # the missed ack is noted; backoff starts
    clock.advance(timedelta(seconds=6.1))
    assert await retry_pass(sessions, ctx) == 1
    assert [c.end_sessions for c in commands_in(await drain(sessions))] == [True]
    # A newer epoch without the flag does not take back what was asked.
    await start(sessions, ctx, epoch=3)
    assert [(c.epoch, c.end_sessions) for c in commands_in(await drain(sessions))] == [(3, True)]


async def test_ack_without_verification_is_not_revoked(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext, clock: ManualClock
) -> None:
    command_id = await start(sessions, ctx)
    await drain(sessions)
    await answer(sessions, ctx, command_id=command_id, verified=False)
    assert statuses(await drain(sessions)) == []
    state = await revocation(sessions)
    assert state.state == RevocationState.BACKING_OFF
    assert "without verifying" in state.last_error
    assert state.next_attempt_at is not None


async def test_missed_deadlines_retry_with_backoff_then_dead_letter(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext, clock: ManualClock
) -> None:
    await start(sessions, ctx)
    await drain(sessions)
    clock.advance(timedelta(seconds=29))
    assert await retry_pass(sessions, ctx) == 0
    clock.advance(timedelta(seconds=1))
    assert await retry_pass(sessions, ctx) == 1  # the missed ack is noted; backoff starts
    assert await drain(sessions) == []
    state = await revocation(sessions)
    assert state.state == RevocationState.BACKING_OFF
    assert "no ack from agent demo-agent within 30s" in state.last_error
    clock.advance(timedelta(seconds=6.1))  # 5 s backoff + at most 20 % jitter
    assert await retry_pass(sessions, ctx) == 1
    second = await drain(sessions)
    assert [t for t, _ in second] == ["lapse.agent.demo-agent.commands.v1"]
    assert (await revocation(sessions)).attempt == 2
    clock.advance(timedelta(seconds=30))
    await retry_pass(sessions, ctx)
    clock.advance(timedelta(seconds=12.1))  # 10 s backoff + jitter
    await retry_pass(sessions, ctx)
    assert (await revocation(sessions)).attempt == 3
    await drain(sessions)
    clock.advance(timedelta(seconds=30))
    assert await retry_pass(sessions, ctx) == 1
    dead = await drain(sessions)
    assert [t for t, _ in dead] == ["lapse.revoking-dead-letter.v1", "lapse.grants.v1"]
    record = dead[0][1]
    assert isinstance(record, events_pb2.RevocationDeadLettered)
    assert [a.attempt for a in record.attempts] == [1, 2, 3]
    assert all("no ack from agent demo-agent within 30s" in a.error for a in record.attempts)
    assert record.spec.principal == "alice" and record.spec.agent_id == "demo-agent"
    assert statuses(dead) == ["GRANT_STATUS_REVOKING+stuck"]
    assert (await revocation(sessions)).state == RevocationState.DEAD_LETTERED


async def test_in_flight_limit_queues_and_promotes(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext
) -> None:
    limited = RevokerContext(
        signer=ctx.signer,
        topics=ctx.topics,
        clock=ctx.clock,
        policy=ctx.policy,
        max_in_flight_per_agent=1,
    )
    first = await start(sessions, limited)
    second = events_pb2.RevokeRequested(grant_id="grant-2", request_id="req-2", epoch=2, spec=SPEC)
    async with sessions() as session, session.begin():
        await accept_revoke_request(session=session, requested=second, ctx=limited)
        queued = await session.get(Revocation, "grant-2")
        assert queued is not None and queued.state == RevocationState.QUEUED
    await drain(sessions)
    await answer(sessions, limited, command_id=first)
    promoted = await drain(sessions)
    assert [t for t, _ in promoted] == ["lapse.grants.v1", "lapse.agent.demo-agent.commands.v1"]
    async with sessions() as session:
        sent = await session.get(Revocation, "grant-2")
        assert sent is not None and sent.state == RevocationState.AWAITING_ACK


async def test_replay_and_cancel_only_stuck_revocations(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext
) -> None:
    command_id = await start(sessions, ctx)
    async with sessions() as session, session.begin():
        with pytest.raises(Refused, match="not stuck") as refused:
            await cancel_stuck_revocation(
                session=session, grant_id="grant-1", operator="sre", reason="", ctx=ctx
            )
        assert refused.value.kind is Refusal.CONFLICT
    await answer(
        sessions, ctx, command_id=command_id, outcome=events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
    )
    await drain(sessions)
    async with sessions() as session, session.begin():
        detail = await replay_stuck_revocation(
            session=session, grant_id="grant-1", operator="sre-1", reason="agent fixed", ctx=ctx
        )
    assert detail.startswith("replayed")
    replayed = await drain(sessions)
    assert [t for t, _ in replayed] == [
        "lapse.agent.demo-agent.commands.v1",
        "lapse.revoking-dead-letter.v1",
        "lapse.grants.v1",
    ]
    state = await revocation(sessions)
    assert (state.epoch, state.attempt, state.state) == (3, 1, RevocationState.AWAITING_ACK)
    await answer(
        sessions,
        ctx,
        command_id=state.command_id,
        outcome=events_pb2.RESULT_OUTCOME_FAILED_PERMANENT,
        epoch=3,
    )
    await drain(sessions)
    async with sessions() as session, session.begin():
        detail = await cancel_stuck_revocation(
            session=session, grant_id="grant-1", operator="sre-1", reason="login deleted", ctx=ctx
        )
    assert "may still exist in the target" in detail
    canceled = await drain(sessions)
    assert statuses(canceled) == ["GRANT_STATUS_REVOKE_CANCELED"]
    fact = canceled[-1][1]
    assert isinstance(fact, events_pb2.GrantStatusChanged) and "WARNING" in fact.detail
    assert (await revocation(sessions)).state == RevocationState.CANCELED


async def test_transient_failure_waits_for_backoff(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext, clock: ManualClock
) -> None:
    command_id = await start(sessions, ctx)
    await drain(sessions)
    await answer(
        sessions, ctx, command_id=command_id, outcome=events_pb2.RESULT_OUTCOME_FAILED_TRANSIENT
    )
    clock.advance(timedelta(seconds=4))
    assert await retry_pass(sessions, ctx) == 0
    clock.advance(timedelta(seconds=2.1))  # 5 s backoff + at most 20 % jitter
    assert await retry_pass(sessions, ctx) == 1
    assert (await revocation(sessions)).attempt == 2


async def test_permanent_failure_dead_letters_at_once(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext
) -> None:
    command_id = await start(sessions, ctx)
    await drain(sessions)
    await answer(
        sessions, ctx, command_id=command_id, outcome=events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
    )
    topics = [t for t, _ in await drain(sessions)]
    assert topics == ["lapse.revoking-dead-letter.v1", "lapse.grants.v1"]


async def test_stale_epochs_are_ignored(
    sessions: async_sessionmaker[AsyncSession], ctx: RevokerContext
) -> None:
    older = await start(sessions, ctx, epoch=2)
    newer = await start(sessions, ctx, epoch=3)
    assert older != newer
    await drain(sessions)
    await start(sessions, ctx, epoch=2)  # an older revoke request arriving late
    assert await drain(sessions) == []
    # The answer to the epoch-2 command, after epoch 3 took over: ignored.
    await answer(sessions, ctx, command_id=older, epoch=2)
    assert await drain(sessions) == []
    assert (await revocation(sessions)).state == RevocationState.AWAITING_ACK
    # The epoch-3 command's id with epoch 2 answers nothing that was sent: refused.
    with pytest.raises(RefusedMessage, match="was sent for grant 'grant-1' epoch 3"):
        await answer(sessions, ctx, command_id=newer, epoch=2)
    assert (await revocation(sessions)).state == RevocationState.AWAITING_ACK


def test_backoff_grows_exponentially_within_jitter(ctx: RevokerContext) -> None:
    for attempt, base in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)]:
        delay = ctx.policy.backoff(attempt).total_seconds()
        assert base <= delay <= base * 1.2
