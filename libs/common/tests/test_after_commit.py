"""`after_commit` calls back once the transaction committed, never when it rolled back, and
only once however the session goes on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lapse_common.db import after_commit
from lapse_common.messaging.inbox import InboxRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


async def test_called_after_the_commit_not_before(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def count() -> int:
        async with sessions() as reader:
            return int(await reader.scalar(select(func.count()).select_from(InboxRecord)) or 0)

    woken: list[str] = []
    async with sessions() as session, session.begin():
        session.add(InboxRecord(consumer="c", event_id="e-1", handled_at=NOW))
        after_commit(session, lambda: woken.append("woken"))
        await session.flush()
        assert woken == [], "called before the commit"
    assert woken == ["woken"]
    assert await count() == 1


async def test_not_called_when_the_transaction_rolls_back(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    woken: list[str] = []
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            after_commit(session, lambda: woken.append("woken"))
            raise RuntimeError("the handler failed")
    assert woken == []


async def test_called_once_and_not_for_a_later_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    woken: list[str] = []
    async with sessions() as session:
        async with session.begin():
            after_commit(session, lambda: woken.append("first"))
        async with session.begin():
            session.add(InboxRecord(consumer="c", event_id="e-2", handled_at=NOW))
    assert woken == ["first"]
