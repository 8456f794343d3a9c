"""Ending a grant early: the request service names the grant and why; the scheduler alone
decides the epoch and whether an overlapping grant keeps the access."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.clock import ManualClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.codec import decode
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from lapse_grant_scheduler.models import Grant, GrantState, SchedulerBase
from lapse_grant_scheduler.operations.end_grant_early import end_grant_early
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

TOPICS = Topics()
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


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


def grant(grant_id: str, *, status: str = GrantState.ACTIVE, minutes: int = 10) -> Grant:
    return Grant(
        grant_id=grant_id,
        request_id=f"req-{grant_id}",
        requester="alice",
        integration_id="demo-pg",
        agent_id="demo-agent",
        resource="appdb",
        permission="read",
        principal="alice",
        status=status,
        epoch=1,
        duration_seconds=minutes * 60,
        command_id=f"cmd-{grant_id}",
        created_at=NOW,
        granted_at=NOW,
        expires_at=NOW + timedelta(minutes=minutes),
        detail="",
        trace_context="{}",
    )


async def end(
    sessions: async_sessionmaker[AsyncSession], grant_id: str, *, end_sessions: bool = False
) -> list[events_pb2.RevokeRequested]:
    """Handle one end request; the revoke requests it sent."""
    async with sessions() as session, session.begin():
        await end_grant_early(
            session=session,
            requested=events_pb2.GrantEndRequested(
                grant_id=grant_id,
                request_id=f"req-{grant_id}",
                reason=common_pb2.REASON_PANIC,
                actor="ops: incident",
                end_sessions=end_sessions,
                run_id="run-1",
            ),
            topics=TOPICS,
            clock=ManualClock(NOW),
        )
    async with sessions() as session, session.begin():
        rows = list((await session.execute(select(OutboxMessage))).scalars())
        await session.execute(delete(OutboxMessage))
    sent = []
    for row in rows:
        if row.topic == TOPICS.revoke_requests:
            payload = decode(row.value).payload
            assert isinstance(payload, events_pb2.RevokeRequested)
            sent.append(payload)
    return sent


async def add(sessions: async_sessionmaker[AsyncSession], *grants: Grant) -> None:
    async with sessions() as session, session.begin():
        session.add_all(grants)


async def status_and_epoch(
    sessions: async_sessionmaker[AsyncSession], grant_id: str
) -> tuple[str, int]:
    async with sessions() as session:
        row = await session.get(Grant, grant_id)
        assert row is not None
        return row.status, row.epoch


async def test_the_scheduler_bumps_the_epoch_and_hands_the_grant_to_the_revoker(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add(sessions, grant("g-1"))
    [revoke] = await end(sessions, "g-1", end_sessions=True)
    assert (revoke.grant_id, revoke.epoch, revoke.reason) == ("g-1", 2, common_pb2.REASON_PANIC)
    assert (revoke.actor, revoke.run_id, revoke.end_sessions) == ("ops: incident", "run-1", True)
    assert not revoke.covered_by_grant_id
    assert await status_and_epoch(sessions, "g-1") == (GrantState.REVOKE_REQUESTED, 2)
    assert await end(sessions, "g-1") == [], "a second end request starts nothing new"


async def test_an_overlapping_active_grant_covers_the_one_ending_and_not_the_other_way(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add(sessions, grant("g-short", minutes=5), grant("g-long", minutes=50))
    [first] = await end(sessions, "g-short")
    assert first.covered_by_grant_id == "g-long"
    assert first.covered_until.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=50)
    # The covering grant's own end removes the access: nothing covers it any more.
    [second] = await end(sessions, "g-long")
    assert not second.covered_by_grant_id


async def test_a_grant_already_being_revoked_gets_only_its_sessions_ended_at_its_epoch(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    expiring = grant("g-1", status=GrantState.REVOKE_REQUESTED)
    expiring.epoch = 2
    await add(sessions, expiring)
    assert await end(sessions, "g-1") == []
    [forwarded] = await end(sessions, "g-1", end_sessions=True)
    assert (forwarded.epoch, forwarded.end_sessions) == (2, True)
    assert await status_and_epoch(sessions, "g-1") == (GrantState.REVOKE_REQUESTED, 2)


async def test_a_failed_grant_is_left_alone_and_an_unknown_one_refused(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await add(sessions, grant("g-failed", status=GrantState.GRANT_FAILED))
    assert await end(sessions, "g-failed") == []
    with pytest.raises(RefusedMessage, match="no such grant"):
        await end(sessions, "g-nobody")
