"""Expiries claimed together: each due grant's revoke names the longest-lasting other ACTIVE
grant of the same access (so the revoker leaves the access in place), grants that end
together never cover each other, and finding the covering grants is one query however many
grants fall due."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.clock import ManualClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.codec import decode
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.topics import Topics
from lapse_grant_scheduler.models import Grant, GrantState, SchedulerBase
from lapse_grant_scheduler.operations.request_due_revocations import request_due_revocations
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

TOPICS = Topics()
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine_for_service(
        f"sqlite+aiosqlite:///{tmp_path}/s.db", schema="grant_scheduler"
    )
    await create_schema(
        engine, schema="grant_scheduler", metadatas=[Base.metadata, SchedulerBase.metadata]
    )
    yield engine
    await engine.dispose()


def active(grant_id: str, *, principal: str, ends_in: timedelta) -> Grant:
    return Grant(
        grant_id=grant_id,
        request_id=f"req-{grant_id}",
        requester=principal,
        integration_id="demo-pg",
        agent_id="demo-agent",
        resource="appdb",
        permission="read",
        principal=principal,
        status=GrantState.ACTIVE,
        epoch=1,
        duration_seconds=3600,
        command_id=f"cmd-{grant_id}",
        created_at=NOW - timedelta(hours=1),
        granted_at=NOW - timedelta(hours=1),
        expires_at=NOW + ends_in,
        detail="",
        trace_context="{}",
    )


async def claim(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[str, events_pb2.RevokeRequested]:
    async with sessions() as session, session.begin():
        await request_due_revocations(
            session=session, topics=TOPICS, clock=ManualClock(NOW), batch_size=500
        )
    async with sessions() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    revokes = {}
    for row in rows:
        payload = decode(row.value).payload
        if isinstance(payload, events_pb2.RevokeRequested):
            revokes[payload.grant_id] = payload
    return revokes


async def test_each_due_grant_names_the_longest_other_grant_of_its_access(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        session.add_all(
            [
                # alice: two grants end now, two others last 1 h and 2 h.
                active("a-due-1", principal="alice", ends_in=-timedelta(seconds=1)),
                active("a-due-2", principal="alice", ends_in=-timedelta(seconds=2)),
                active("a-1h", principal="alice", ends_in=timedelta(hours=1)),
                active("a-2h", principal="alice", ends_in=timedelta(hours=2)),
                # bob: his only grant ends now; carol's grant of the same role is not his.
                active("b-due", principal="bob", ends_in=-timedelta(seconds=1)),
                active("c-1h", principal="carol", ends_in=timedelta(hours=1)),
            ]
        )
    revokes = await claim(sessions)
    assert set(revokes) == {"a-due-1", "a-due-2", "b-due"}
    assert revokes["a-due-1"].covered_by_grant_id == "a-2h"
    assert revokes["a-due-2"].covered_by_grant_id == "a-2h"
    assert revokes["a-due-1"].covered_until.ToDatetime(UTC) == NOW + timedelta(hours=2)
    assert revokes["b-due"].covered_by_grant_id == ""


async def test_grants_ending_together_do_not_cover_each_other(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        session.add_all(
            [
                active("due-1", principal="alice", ends_in=-timedelta(seconds=1)),
                active("due-2", principal="alice", ends_in=-timedelta(seconds=1)),
            ]
        )
    revokes = await claim(sessions)
    assert {grant_id: r.covered_by_grant_id for grant_id, r in revokes.items()} == {
        "due-1": "",
        "due-2": "",
    }


async def test_one_query_finds_the_covering_grants_of_any_number_of_due_grants(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    async def selects_to_claim(users: int) -> int:
        async with sessions() as session, session.begin():
            for n in range(users):
                session.add(active(f"due-{users}-{n}", principal=f"u{n}", ends_in=-timedelta(1)))
                session.add(active(f"keep-{users}-{n}", principal=f"u{n}", ends_in=timedelta(1)))
        statements.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            revokes = await claim(sessions)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert all(revokes[f"due-{users}-{n}"].covered_by_grant_id for n in range(users))
        # claim() reads the outbox back afterwards: one SELECT that is not the operation's.
        return len(statements) - 1

    assert await selects_to_claim(1) == await selects_to_claim(40)
