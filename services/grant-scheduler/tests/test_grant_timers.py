"""The scheduler's use cases with a moving clock: approval -> GRANTING + command, agent ack
-> ACTIVE with a durable expiry, expiry -> revoke request with a bumped epoch."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.auth import ensure_keypair
from lapse_common.clock import ManualClock, as_utc
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.codec import decode
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2
from lapse_common.topics import Topics
from lapse_grant_scheduler.expiry_timer import ExpiryTimer
from lapse_grant_scheduler.models import Grant, GrantState, SchedulerBase
from lapse_grant_scheduler.operations.apply_approval_change import (
    extend_active_grant,
    shorten_approval,
)
from lapse_grant_scheduler.operations.create_grants import create_grants
from lapse_grant_scheduler.operations.record_grant_result import record_grant_result
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

TOPICS = Topics()
NOTICE = timedelta(minutes=10)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 29, 9, 0, tzinfo=UTC))


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for_service(
        f"sqlite+aiosqlite:///{tmp_path}/s.db", schema="grant_scheduler"
    )
    await create_schema(
        engine, schema="grant_scheduler", metadatas=[Base.metadata, SchedulerBase.metadata]
    )
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_keypair(tmp_path / "keys", "command-signing")


def approval(duration: int = 60) -> events_pb2.RequestDecided:
    return events_pb2.RequestDecided(
        request_id="req-1",
        decision=common_pb2.REQUEST_STATUS_APPROVED,
        decided_by="lapse-approval",
        reason=common_pb2.REASON_AUTO_APPROVAL,
        requester="alice",
        items=[
            common_pb2.GrantSpec(
                integration_id="demo-pg",
                agent_id="demo-agent",
                resource="appdb",
                permission="read",
                principal="alice",
            )
        ],
        duration_seconds=duration,
    )


async def drain_outbox(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with sessions() as session, session.begin():
        rows = list(
            (await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars()
        )
        await session.execute(delete(OutboxMessage))
    return rows


async def test_approval_creates_a_signed_grant_command_once(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    signer = CommandSigner(
        private_key_pem=keys[0].read_bytes(), clock=clock, ttl=timedelta(minutes=10)
    )
    for _ in range(2):  # a redelivered decision must not grant twice
        async with sessions() as session, session.begin():
            await create_grants(
                session=session, decided=approval(), signer=signer, topics=TOPICS, clock=clock
            )
    rows = await drain_outbox(sessions)
    assert [r.topic for r in rows] == ["lapse.agent.demo-agent.commands.v1", "lapse.grants.v1"]
    signed = decode(rows[0].value).payload
    assert isinstance(signed, commands_pb2.SignedCommand)
    command = CommandVerifier.from_pem(keys[1].read_bytes(), clock=clock).verify(signed)
    assert command.kind == common_pb2.COMMAND_KIND_GRANT and command.epoch == 1
    fact = decode(rows[1].value).payload
    assert isinstance(fact, events_pb2.GrantStatusChanged)
    assert fact.status == common_pb2.GRANT_STATUS_GRANTING


async def test_rejected_request_creates_no_grant(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    signer = CommandSigner(
        private_key_pem=keys[0].read_bytes(), clock=clock, ttl=timedelta(minutes=10)
    )
    rejected = approval()
    rejected.decision = common_pb2.REQUEST_STATUS_REJECTED
    async with sessions() as session, session.begin():
        assert (
            await create_grants(
                session=session, decided=rejected, signer=signer, topics=TOPICS, clock=clock
            )
            == 0
        )
    assert await drain_outbox(sessions) == []


async def granted(
    sessions: async_sessionmaker[AsyncSession],
    clock: ManualClock,
    keys: tuple[Path, Path],
    duration: int,
    notice: timedelta = timedelta(0),
) -> Grant:
    signer = CommandSigner(
        private_key_pem=keys[0].read_bytes(), clock=clock, ttl=timedelta(minutes=10)
    )
    async with sessions() as session, session.begin():
        await create_grants(
            session=session, decided=approval(duration), signer=signer, topics=TOPICS, clock=clock
        )
    async with sessions() as session:
        grant = (await session.execute(select(Grant))).scalar_one()
    clock.advance(timedelta(seconds=2))
    async with sessions() as session, session.begin():
        assert await record_grant_result(
            session=session,
            result=events_pb2.AgentResult(
                grant_id=grant.grant_id,
                epoch=1,
                command_id=grant.command_id,
                kind=common_pb2.COMMAND_KIND_GRANT,
                outcome=events_pb2.RESULT_OUTCOME_SUCCEEDED,
                changed=True,
                agent_id="demo-agent",
            ),
            topics=TOPICS,
            clock=clock,
            expiry_notice=notice,
        )
    async with sessions() as session:
        return (await session.execute(select(Grant))).scalar_one()


async def test_expiry_starts_when_the_agent_confirmed(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    grant = await granted(sessions, clock, keys, duration=60)
    assert grant.status == GrantState.ACTIVE
    assert grant.expires_at is not None
    assert as_utc(grant.expires_at) == clock.now() + timedelta(seconds=60)


async def test_timer_sleeps_until_the_expiry_then_requests_the_revoke_once(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    await granted(sessions, clock, keys, duration=60)
    await drain_outbox(sessions)
    timer = ExpiryTimer(
        sessions=sessions,
        wake_relay=lambda: None,
        topics=TOPICS,
        clock=clock,
        max_sleep=3600,
        batch_size=10,
    )
    assert await timer.tick() == pytest.approx(60)
    clock.advance(timedelta(seconds=59))
    assert await timer.tick() == pytest.approx(1)
    assert await drain_outbox(sessions) == []
    clock.advance(timedelta(seconds=1, milliseconds=5))
    await timer.tick()
    rows = await drain_outbox(sessions)
    assert [r.topic for r in rows] == ["lapse.revoke-requests.v1"]
    revoke = decode(rows[0].value).payload
    assert isinstance(revoke, events_pb2.RevokeRequested)
    assert revoke.epoch == 2 and revoke.reason == common_pb2.REASON_EXPIRED
    clock.advance(timedelta(seconds=30))
    await timer.tick()
    assert await drain_outbox(sessions) == [], "an expired grant is claimed only once"


async def test_stale_or_failed_grant_answers(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    signer = CommandSigner(
        private_key_pem=keys[0].read_bytes(), clock=clock, ttl=timedelta(minutes=10)
    )
    async with sessions() as session, session.begin():
        await create_grants(
            session=session, decided=approval(), signer=signer, topics=TOPICS, clock=clock
        )
    async with sessions() as session:
        grant = (await session.execute(select(Grant))).scalar_one()
    failure = events_pb2.AgentResult(
        grant_id=grant.grant_id,
        epoch=7,
        command_id=grant.command_id,
        kind=common_pb2.COMMAND_KIND_GRANT,
        outcome=events_pb2.RESULT_OUTCOME_FAILED_PERMANENT,
        detail="login alice does not exist in target",
        agent_id="demo-agent",
    )
    async with sessions() as session, session.begin():
        await record_grant_result(
            session=session, result=failure, topics=TOPICS, clock=clock, expiry_notice=NOTICE
        )
    async with sessions() as session:
        assert (await session.execute(select(Grant))).scalar_one().status == GrantState.GRANTING
    failure.epoch = 1
    async with sessions() as session, session.begin():
        await record_grant_result(
            session=session, result=failure, topics=TOPICS, clock=clock, expiry_notice=NOTICE
        )
    async with sessions() as session:
        failed = (await session.execute(select(Grant))).scalar_one()
    assert failed.status == GrantState.GRANT_FAILED
    assert failed.expires_at is None


@pytest.mark.parametrize(
    ("forged", "reason"),
    [
        ({"command_id": "cmd-made-up"}, "names command 'cmd-made-up', but the grant command"),
        ({"agent_id": "far-agent"}, "comes from agent 'far-agent', but its command was sent"),
        ({"grant_id": "grant-never-made"}, "answers no grant command the scheduler sent"),
    ],
)
async def test_a_grant_result_that_answers_no_sent_command_is_refused(
    sessions: async_sessionmaker[AsyncSession],
    clock: ManualClock,
    keys: tuple[Path, Path],
    forged: dict[str, str],
    reason: str,
) -> None:
    """A forged failure must not make the scheduler give up on a grant the agent may still
    execute (nor a forged success start its clock): it is refused, and nothing changes."""
    signer = CommandSigner(
        private_key_pem=keys[0].read_bytes(), clock=clock, ttl=timedelta(minutes=10)
    )
    async with sessions() as session, session.begin():
        await create_grants(
            session=session, decided=approval(), signer=signer, topics=TOPICS, clock=clock
        )
    await drain_outbox(sessions)
    async with sessions() as session:
        grant = (await session.execute(select(Grant))).scalar_one()
    fields = {
        "grant_id": grant.grant_id,
        "command_id": grant.command_id,
        "agent_id": "demo-agent",
        **forged,
    }
    for outcome in (
        events_pb2.RESULT_OUTCOME_FAILED_PERMANENT,
        events_pb2.RESULT_OUTCOME_SUCCEEDED,
    ):
        result = events_pb2.AgentResult(
            epoch=1, kind=common_pb2.COMMAND_KIND_GRANT, outcome=outcome, **fields
        )
        with pytest.raises(RefusedMessage, match=re.escape(reason)):
            async with sessions() as session, session.begin():
                await record_grant_result(
                    session=session, result=result, topics=TOPICS, clock=clock, expiry_notice=NOTICE
                )
    async with sessions() as session:
        unchanged = (await session.execute(select(Grant))).scalar_one()
    assert (unchanged.status, unchanged.expires_at) == (GrantState.GRANTING, None)
    assert await drain_outbox(sessions) == []


# ---------------------------------------------------------------- expiry reminders


def expiry_timer(sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> ExpiryTimer:
    return ExpiryTimer(
        sessions=sessions,
        wake_relay=lambda: None,
        topics=TOPICS,
        clock=clock,
        max_sleep=3600,
        batch_size=10,
    )


def reminders_in(rows: list[OutboxMessage]) -> list[events_pb2.GrantExpiringSoon]:
    decoded = [decode(row.value).payload for row in rows]
    return [p for p in decoded if isinstance(p, events_pb2.GrantExpiringSoon)]


@pytest.mark.parametrize(
    ("duration", "notice", "ahead"),
    [
        (3600, NOTICE, NOTICE),
        # A short grant is reminded after three quarters of its life, not the moment it starts.
        (60, NOTICE, timedelta(seconds=15)),
        (3600, timedelta(0), None),
    ],
)
async def test_activation_arms_the_reminder(
    sessions: async_sessionmaker[AsyncSession],
    clock: ManualClock,
    keys: tuple[Path, Path],
    duration: int,
    notice: timedelta,
    ahead: timedelta | None,
) -> None:
    grant = await granted(sessions, clock, keys, duration=duration, notice=notice)
    assert grant.expires_at is not None
    if ahead is None:
        assert grant.remind_at is None
    else:
        assert grant.remind_at is not None
        assert as_utc(grant.remind_at) == as_utc(grant.expires_at) - ahead


async def test_timer_wakes_for_the_reminder_sends_it_once_then_revokes(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    grant = await granted(sessions, clock, keys, duration=60, notice=NOTICE)
    await drain_outbox(sessions)
    timer = expiry_timer(sessions, clock)
    assert await timer.tick() == pytest.approx(45), "wakes for the reminder, not the expiry"
    assert await drain_outbox(sessions) == []
    clock.advance(timedelta(seconds=45))
    assert await timer.tick() == pytest.approx(15)
    rows = await drain_outbox(sessions)
    assert [(r.topic, r.key) for r in rows] == [("lapse.grants.v1", grant.grant_id)]
    [reminder] = reminders_in(rows)
    assert (reminder.grant_id, reminder.request_id, reminder.requester, reminder.epoch) == (
        grant.grant_id,
        "req-1",
        "alice",
        1,
    )
    assert reminder.spec.resource == "appdb" and reminder.spec.principal == "alice"
    assert grant.expires_at is not None
    assert as_utc(reminder.expires_at.ToDatetime()) == as_utc(grant.expires_at)
    clock.advance(timedelta(seconds=5))
    await timer.tick()
    assert await drain_outbox(sessions) == [], "a reminder is sent once"
    clock.advance(timedelta(seconds=10))
    await timer.tick()
    rows = await drain_outbox(sessions)
    assert [r.topic for r in rows] == ["lapse.revoke-requests.v1"]


async def test_a_grant_already_expired_is_revoked_not_reminded(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    await granted(sessions, clock, keys, duration=60, notice=NOTICE)
    await drain_outbox(sessions)
    clock.advance(timedelta(minutes=5))  # the scheduler was down past both timers
    timer = expiry_timer(sessions, clock)
    await timer.tick()
    rows = await drain_outbox(sessions)
    assert [r.topic for r in rows] == ["lapse.revoke-requests.v1"]
    assert await timer.tick() == 3600, "nothing left to wake for"


async def test_moving_the_expiry_rearms_the_reminder(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    grant = await granted(sessions, clock, keys, duration=3600, notice=NOTICE)
    await drain_outbox(sessions)
    timer = expiry_timer(sessions, clock)
    clock.advance(timedelta(minutes=50))
    await timer.tick()
    assert len(reminders_in(await drain_outbox(sessions))) == 1

    # Extended after the reminder: the new expiry gets its own reminder.
    async with sessions() as session, session.begin():
        assert await extend_active_grant(
            session=session,
            extension=events_pb2.ExtensionApproved(
                request_id="req-1", grant_id=grant.grant_id, extend_by_seconds=1800
            ),
            topics=TOPICS,
            clock=clock,
            expiry_notice=NOTICE,
        )
    await drain_outbox(sessions)
    assert await timer.tick() == pytest.approx(30 * 60)
    clock.advance(timedelta(minutes=30))
    await timer.tick()
    [reminder] = reminders_in(await drain_outbox(sessions))
    assert reminder.epoch == 2
    assert as_utc(reminder.expires_at.ToDatetime()) == clock.now() + NOTICE

    # Shortened by a policy change to 85 minutes from the grant: 5 left, reminded at 3m45s.
    async with sessions() as session, session.begin():
        assert await shorten_approval(
            session=session,
            shortened=events_pb2.ApprovalShortened(request_id="req-1", max_duration_seconds=5100),
            topics=TOPICS,
            clock=clock,
            expiry_notice=NOTICE,
        )
    async with sessions() as session:
        moved = (await session.execute(select(Grant))).scalar_one()
    assert moved.expires_at is not None and moved.remind_at is not None
    assert as_utc(moved.expires_at) == clock.now() + timedelta(minutes=5)
    assert as_utc(moved.remind_at) == clock.now() + timedelta(minutes=3, seconds=45)


async def test_an_unanswered_grant_is_given_up_and_revoked_at_once_if_executed_late(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, keys: tuple[Path, Path]
) -> None:
    signer = CommandSigner(
        private_key_pem=keys[0].read_bytes(), clock=clock, ttl=timedelta(minutes=10)
    )
    async with sessions() as session, session.begin():
        await create_grants(
            session=session, decided=approval(), signer=signer, topics=TOPICS, clock=clock
        )
    await drain_outbox(sessions)
    timer = ExpiryTimer(
        sessions=sessions,
        wake_relay=lambda: None,
        topics=TOPICS,
        clock=clock,
        max_sleep=3600,
        batch_size=10,
        grant_ack_deadline=timedelta(seconds=30),
    )
    clock.advance(timedelta(seconds=29))
    await timer.tick()
    assert await drain_outbox(sessions) == [], "not before the deadline"
    clock.advance(timedelta(seconds=2))
    await timer.tick()
    [failed] = [decode(r.value).payload for r in await drain_outbox(sessions)]
    assert isinstance(failed, events_pb2.GrantStatusChanged)
    assert failed.status == common_pb2.GRANT_STATUS_GRANT_FAILED
    assert "did not answer the grant command within 30s" in failed.detail

    async with sessions() as session:
        grant = (await session.execute(select(Grant))).scalar_one()
    late = events_pb2.AgentResult(
        grant_id=grant.grant_id,
        epoch=1,
        command_id=grant.command_id,
        kind=common_pb2.COMMAND_KIND_GRANT,
        outcome=events_pb2.RESULT_OUTCOME_SUCCEEDED,
        changed=True,
        agent_id="demo-agent",
    )
    async with sessions() as session, session.begin():
        await record_grant_result(
            session=session, result=late, topics=TOPICS, clock=clock, expiry_notice=NOTICE
        )
    payloads = [decode(r.value).payload for r in await drain_outbox(sessions)]
    revoke = next(p for p in payloads if isinstance(p, events_pb2.RevokeRequested))
    assert (revoke.epoch, revoke.reason) == (2, common_pb2.REASON_LATE_GRANT)
    fact = next(p for p in payloads if isinstance(p, events_pb2.GrantStatusChanged))
    assert fact.status == common_pb2.GRANT_STATUS_REVOKING and fact.epoch == 2
    assert fact.detail.startswith("late grant: agent demo-agent executed the grant command")

    # A failure reported late changes nothing more.
    late.outcome = events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
    async with sessions() as session, session.begin():
        await record_grant_result(
            session=session, result=late, topics=TOPICS, clock=clock, expiry_notice=NOTICE
        )
    assert await drain_outbox(sessions) == []
