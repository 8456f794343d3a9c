"""list_events: filters, chain order, paging and limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.message import Message
from lapse_audit.operations import list_events as listing
from lapse_audit.operations.list_events import list_events
from lapse_audit.operations.record_event import record_event
from lapse_common.refusals import Refusal, Refused
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.tests.audit_events import decoded, grant_fact, request_submitted

NOW = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)


async def append(
    sessions: async_sessionmaker[AsyncSession], payload: Message, **envelope_fields: str
) -> None:
    async with sessions() as session, session.begin():
        await record_event(
            session, event=decoded(payload, **envelope_fields), topic="t", recorded_at=NOW
        )


@pytest.fixture
async def populated(
    sessions: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    await append(sessions, request_submitted("r-1"), request_id="r-1")  # 1
    await append(sessions, grant_fact("g-1", "r-1"), request_id="r-1", grant_id="g-1")  # 2
    await append(sessions, request_submitted("r-2"), request_id="r-2")  # 3
    await append(sessions, grant_fact("g-2", "r-2"), request_id="r-2", grant_id="g-2")  # 4
    await append(sessions, grant_fact("g-1", "r-1"), request_id="r-1", grant_id="g-1")  # 5
    return sessions


async def sequences(sessions: async_sessionmaker[AsyncSession], **filters: object) -> list[int]:
    async with sessions() as session:
        return [row.sequence for row in await list_events(session, **filters)]  # type: ignore[arg-type]


async def test_everything_in_chain_order_without_filters(
    populated: async_sessionmaker[AsyncSession],
) -> None:
    assert await sequences(populated) == [1, 2, 3, 4, 5]


async def test_filters_by_request_grant_and_type(
    populated: async_sessionmaker[AsyncSession],
) -> None:
    assert await sequences(populated, request_id="r-1") == [1, 2, 5]
    assert await sequences(populated, grant_id="g-1") == [2, 5]
    assert await sequences(populated, event_type="lapse.v1.RequestSubmitted") == [1, 3]
    assert await sequences(
        populated, request_id="r-2", event_type="lapse.v1.GrantStatusChanged"
    ) == [4]
    assert await sequences(populated, grant_id="nope") == []


async def test_pages_with_after_sequence_and_limit(
    populated: async_sessionmaker[AsyncSession],
) -> None:
    assert await sequences(populated, limit=2) == [1, 2]
    assert await sequences(populated, after_sequence=2, limit=2) == [3, 4]
    assert await sequences(populated, after_sequence=4, limit=2) == [5]
    assert await sequences(populated, request_id="r-1", after_sequence=1) == [2, 5]


async def test_limit_defaults_and_is_capped(
    populated: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "DEFAULT_LIMIT", 3)
    monkeypatch.setattr(listing, "MAX_LIMIT", 4)

    assert await sequences(populated, limit=0) == [1, 2, 3]
    assert await sequences(populated, limit=1000) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("filters", "message"),
    [({"limit": -1}, "limit must be 0"), ({"after_sequence": -5}, "after_sequence must be 0")],
)
async def test_negative_numbers_are_refused(
    sessions: async_sessionmaker[AsyncSession], filters: dict[str, int], message: str
) -> None:
    with pytest.raises(Refused, match=message) as refused:
        await sequences(sessions, **filters)
    assert refused.value.kind is Refusal.INVALID
