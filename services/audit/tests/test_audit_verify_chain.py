"""verify_chain: an intact log verifies; an edited, removed or cut-off row is named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lapse_audit.models import AuditChainHead, AuditEventRecord
from lapse_audit.operations.record_event import record_event
from lapse_audit.operations.verify_chain import ChainVerification, verify_chain
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.tests.audit_events import decoded, grant_fact

NOW = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)


async def append(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    for index in range(count):
        async with sessions() as session, session.begin():
            await record_event(
                session,
                event=decoded(grant_fact(f"g-{index}", "r-1"), grant_id=f"g-{index}"),
                topic="lapse.grants.v1",
                recorded_at=NOW,
            )


async def verify(
    sessions: async_sessionmaker[AsyncSession], *, batch_size: int = 500
) -> ChainVerification:
    async with sessions() as session:
        return await verify_chain(session, batch_size=batch_size)


async def tamper(sessions: async_sessionmaker[AsyncSession], statement: object) -> None:
    async with sessions() as session, session.begin():
        await session.execute(statement)  # type: ignore[call-overload]


async def test_an_empty_log_verifies(sessions: async_sessionmaker[AsyncSession]) -> None:
    result = await verify(sessions)

    assert result.ok
    assert (result.events_checked, result.first_bad_sequence) == (0, 0)


@pytest.mark.parametrize("batch_size", [2, 500])
async def test_an_intact_log_verifies_and_reports_its_head(
    sessions: async_sessionmaker[AsyncSession], batch_size: int
) -> None:
    await append(sessions, 5)

    result = await verify(sessions, batch_size=batch_size)

    assert result.ok, result.detail
    assert result.events_checked == 5
    assert result.first_bad_sequence == 0
    assert "chain head is sequence 5 with hash" in result.detail


@pytest.mark.parametrize(
    "column",
    [
        AuditEventRecord.payload_json,
        AuditEventRecord.grant_id,
        AuditEventRecord.topic,
        AuditEventRecord.producer,
    ],
)
async def test_an_edited_column_is_found(
    sessions: async_sessionmaker[AsyncSession], column: object
) -> None:
    await append(sessions, 5)
    await tamper(
        sessions,
        update(AuditEventRecord).where(AuditEventRecord.sequence == 3).values({column: "forged"}),
    )

    result = await verify(sessions)

    assert not result.ok
    assert result.first_bad_sequence == 3
    assert result.events_checked == 2
    assert "row altered" in result.detail


async def test_edited_payload_bytes_are_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, 3)
    await tamper(
        sessions,
        update(AuditEventRecord).where(AuditEventRecord.sequence == 2).values(payload=b"forged"),
    )

    result = await verify(sessions)

    assert (result.ok, result.first_bad_sequence) == (False, 2)


async def test_a_recomputed_hash_does_not_hide_an_edit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Someone who edits a row and fixes its own hash breaks the next row's link."""
    await append(sessions, 4)
    await tamper(
        sessions,
        update(AuditEventRecord).where(AuditEventRecord.sequence == 2).values(hash="f" * 64),
    )

    result = await verify(sessions)

    assert not result.ok
    assert result.first_bad_sequence == 2


async def test_a_deleted_row_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, 5)
    await tamper(sessions, delete(AuditEventRecord).where(AuditEventRecord.sequence == 2))

    result = await verify(sessions)

    assert not result.ok
    assert result.first_bad_sequence == 2
    assert "sequence 2 is missing" in result.detail


async def test_a_cut_off_tail_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, 5)
    await tamper(sessions, delete(AuditEventRecord).where(AuditEventRecord.sequence >= 4))

    result = await verify(sessions)

    assert not result.ok
    assert result.first_bad_sequence == 4
    assert result.events_checked == 3
    assert "4..5 are missing" in result.detail


async def test_an_edited_chain_head_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, 3)
    await tamper(sessions, update(AuditChainHead).values(last_hash="e" * 64))

    result = await verify(sessions)

    assert not result.ok
    assert result.first_bad_sequence == 3


async def test_a_deleted_chain_head_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    await append(sessions, 2)
    await tamper(sessions, delete(AuditChainHead))

    result = await verify(sessions)

    assert not result.ok
    assert "chain head row is missing" in result.detail
