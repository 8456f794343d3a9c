"""Housekeeping prunes outbox rows and inbox ids past their retention, batch by batch, and
keeps what an operator must still see. On SQLite, and also on PostgreSQL when
LAPSE_TEST_DATABASE_URL is set (in a throwaway schema), since only PostgreSQL takes the
SKIP LOCKED path."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lapse_common.clock import ManualClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.housekeeping import Housekeeping, Pruned
from lapse_common.messaging.inbox import InboxRecord, first_delivery
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.settings import HousekeepingSettings
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.integration.waiting import wait_for

DAY = timedelta(days=1)
START = datetime(2026, 12, 1, tzinfo=UTC)


def backends() -> list[Any]:
    # The PostgreSQL cases need the real database, like the other integration tests: `make
    # test` starts it and sets the URL; `make test-unit` leaves them out.
    return [
        "sqlite",
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    ]


def database_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/t.db"
    url = os.environ.get("LAPSE_TEST_DATABASE_URL")
    if not url:
        pytest.fail(
            "LAPSE_TEST_DATABASE_URL is not set: run `make test` (deploy/local/test.sh starts "
            "PostgreSQL and sets it), or deselect with -m 'not integration'"
        )
    return url


@pytest.fixture(params=backends())
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    schema = f"housekeeping_test_{uuid.uuid4().hex[:8]}"
    url = database_url(request.param, tmp_path)
    engine = create_engine_for_service(url, schema=schema)
    await create_schema(engine, schema=schema, metadatas=[Base.metadata])
    yield engine
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


def housekeeping(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, **settings: Any
) -> Housekeeping:
    return Housekeeping(
        sessions=sessions,
        clock=clock,
        settings=HousekeepingSettings(**{"batch_pause_seconds": 0, **settings}),
    )


async def add_outbox(
    sessions: async_sessionmaker[AsyncSession],
    *,
    count: int,
    key: str,
    published_at: datetime | None,
    set_aside_at: datetime | None = None,
) -> None:
    rows = [
        {
            "event_id": uuid.uuid4().hex,
            "topic": "lapse.grants.v1",
            "key": key,
            "value": b"x" * 100,
            "headers_json": "{}",
            "created_at": published_at or set_aside_at or START,
            "published_at": published_at,
            "set_aside_at": set_aside_at,
            "set_aside_reason": "MessageSizeTooLargeError: too big" if set_aside_at else None,
        }
        for _ in range(count)
    ]
    async with sessions() as session, session.begin():
        await session.execute(insert(OutboxMessage), rows)


async def add_inbox(
    sessions: async_sessionmaker[AsyncSession], *, count: int, consumer: str, handled_at: datetime
) -> None:
    rows = [
        {"consumer": consumer, "event_id": uuid.uuid4().hex, "handled_at": handled_at}
        for _ in range(count)
    ]
    async with sessions() as session, session.begin():
        await session.execute(insert(InboxRecord), rows)


async def outbox_keys(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        query = select(OutboxMessage.key, func.count()).group_by(OutboxMessage.key)
        return {key: n for key, n in (await session.execute(query)).all()}


async def inbox_consumers(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        query = select(InboxRecord.consumer, func.count()).group_by(InboxRecord.consumer)
        return {consumer: n for consumer, n in (await session.execute(query)).all()}


def record_deletes(engine: AsyncEngine) -> list[tuple[float, int]]:
    """(when, rows) of every DELETE the engine runs from now on."""
    deletes: list[tuple[float, int]] = []

    def after(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append((time.perf_counter(), cursor.rowcount))

    event.listen(engine.sync_engine, "after_cursor_execute", after)
    return deletes


async def test_published_outbox_rows_past_retention_go_and_the_rest_stay(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(START)
    await add_outbox(sessions, count=3, key="old-published", published_at=START - 2 * DAY)
    await add_outbox(sessions, count=2, key="recent-published", published_at=START - DAY / 2)
    await add_outbox(sessions, count=2, key="old-pending", published_at=None)
    await add_outbox(
        sessions, count=2, key="old-set-aside", published_at=None, set_aside_at=START - 90 * DAY
    )
    pruned = await housekeeping(sessions, clock).prune_once()
    assert pruned.outbox_rows == 3
    assert await outbox_keys(sessions) == {
        "recent-published": 2,
        "old-pending": 2,
        "old-set-aside": 2,
    }


async def test_inbox_ids_past_retention_go_and_recent_ones_stay(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(START)
    await add_inbox(sessions, count=4, consumer="old", handled_at=START - 31 * DAY)
    await add_inbox(sessions, count=3, consumer="recent", handled_at=START - 29 * DAY)
    await add_inbox(sessions, count=1, consumer="just-now", handled_at=START)
    pruned = await housekeeping(sessions, clock, inbox_retention_seconds=30 * 86400).prune_once()
    assert pruned == Pruned(outbox_rows=0, inbox_ids=4, statements=2)
    assert await inbox_consumers(sessions) == {"recent": 3, "just-now": 1}
    # Time moves on: what was recent falls due in its turn.
    clock.advance(2 * DAY)
    await housekeeping(sessions, clock, inbox_retention_seconds=30 * 86400).prune_once()
    assert await inbox_consumers(sessions) == {"just-now": 1}


async def test_more_rows_than_a_batch_go_in_several_statements_of_at_most_a_batch(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    clock = ManualClock(START)
    await add_outbox(sessions, count=25, key="old", published_at=START - 2 * DAY)
    await add_outbox(sessions, count=3, key="recent", published_at=START)
    await add_inbox(sessions, count=20, consumer="old", handled_at=START - 60 * DAY)
    await add_inbox(sessions, count=2, consumer="recent", handled_at=START)
    deletes = record_deletes(engine)
    pruned = await housekeeping(sessions, clock, batch_size=10).prune_once()
    assert pruned == Pruned(outbox_rows=25, inbox_ids=20, statements=6)
    # Outbox 10 + 10 + 5; inbox 10 + 10 and the empty one that shows nothing is left.
    assert [rows for _, rows in deletes] == [10, 10, 5, 10, 10, 0]
    assert await outbox_keys(sessions) == {"recent": 3}
    assert await inbox_consumers(sessions) == {"recent": 2}


async def test_a_transaction_of_the_service_is_not_held_up_while_pruning_runs(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    clock = ManualClock(START)
    await add_outbox(sessions, count=3000, key="old", published_at=START - 2 * DAY)
    await add_inbox(sessions, count=3000, consumer="old", handled_at=START - 60 * DAY)
    deletes = record_deletes(engine)
    pruning = asyncio.create_task(
        housekeeping(sessions, clock, batch_size=100, batch_pause_seconds=0.002).prune_once()
    )
    # What a consumer does: record the event id and stage an event, in one transaction.
    committed: list[tuple[float, float]] = []
    while not pruning.done():
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            assert await first_delivery(
                session, consumer="live", event_id=uuid.uuid4().hex, now=clock.now()
            )
            session.add(
                OutboxMessage(
                    event_id=uuid.uuid4().hex,
                    topic="lapse.grants.v1",
                    key="live",
                    value=b"x",
                    headers_json="{}",
                    created_at=clock.now(),
                )
            )
        committed.append((started, time.perf_counter()))
    assert (await pruning) == Pruned(outbox_rows=3000, inbox_ids=3000, statements=62)
    first_delete, last_delete = deletes[0][0], deletes[-1][0]
    # Each batch commits on its own: writes went through between the batches rather than
    # after the whole pass (on SQLite, a pass in one transaction would lock them all out).
    between = [end for _, end in committed if first_delete < end < last_delete]
    assert len(between) >= 5, (len(between), len(committed))
    assert await outbox_keys(sessions) == {"live": len(committed)}
    assert await inbox_consumers(sessions) == {"live": len(committed)}


async def test_tables_stay_bounded_under_steady_traffic(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(START)
    keeper = housekeeping(sessions, clock)  # the defaults: outbox 1 day, inbox 30 days
    per_day = 20
    for day in range(45):
        await add_outbox(sessions, count=per_day, key="sent", published_at=clock.now())
        await add_inbox(sessions, count=per_day, consumer="c", handled_at=clock.now())
        clock.advance(DAY + timedelta(minutes=1))
        await keeper.prune_once()
        outbox = (await outbox_keys(sessions)).get("sent", 0)
        inbox = (await inbox_consumers(sessions)).get("c", 0)
        assert outbox == 0, (day, outbox)
        assert inbox == min(day + 1, 29) * per_day, (day, inbox)


async def test_the_loop_prunes_every_interval_and_outlives_a_failed_pass(
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(START)
    await add_outbox(sessions, count=5, key="old", published_at=START - 2 * DAY)
    keeper = housekeeping(sessions, clock, interval_seconds=0.01)
    prune_once = keeper.prune_once
    passes = 0

    async def first_pass_fails() -> Pruned:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise ConnectionError("database unavailable")
        return await prune_once()

    monkeypatch.setattr(keeper, "prune_once", first_pass_fails)
    loop = asyncio.create_task(keeper.run())
    try:
        # Waits while passes keep coming, however slowly, not for a fixed time.
        await wait_for(
            lambda: outbox_keys(sessions),
            lambda left: passes >= 2 and not left,
            what="a pass after the failed one to prune the old rows",
            progress=lambda _: passes,
        )
        assert not loop.done()
    finally:
        loop.cancel()
    assert await outbox_keys(sessions) == {}
    assert any(
        r.levelno == logging.ERROR and "housekeeping pass failed" in r.getMessage()
        for r in caplog.records
    )


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = HousekeepingSettings()
    assert defaults.outbox_retention_seconds == 86400
    # Beyond what Kafka can still redeliver at its defaults: 7 days' retention plus a
    # 7-day segment roll.
    assert defaults.inbox_retention_seconds > 14 * 86400
    assert (defaults.interval_seconds, defaults.batch_size) == (60, 1000)
    monkeypatch.setenv("LAPSE_HOUSEKEEPING_INBOX_RETENTION_SECONDS", "3600")
    monkeypatch.setenv("LAPSE_HOUSEKEEPING_BATCH_SIZE", "50")
    configured = HousekeepingSettings()
    assert (configured.inbox_retention_seconds, configured.batch_size) == (3600, 50)
