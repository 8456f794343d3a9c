"""The Activity read model follows grant facts forward only, and keeps the full history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lapse_common.clock import ManualClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_request.models import GrantActivity, RequestBase
from lapse_request.operations.record_grant_transition import record_grant_transition
from lapse_request.operations.submit_request import validate_submission
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

CLOCK = ManualClock(datetime(2026, 11, 29, tzinfo=UTC))


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/q.db", schema="request")
    await create_schema(engine, schema="request", metadatas=[Base.metadata, RequestBase.metadata])
    yield session_factory(engine)
    await engine.dispose()


def fact(status: int, epoch: int, *, stuck: bool = False) -> events_pb2.GrantStatusChanged:
    return events_pb2.GrantStatusChanged(
        grant_id="grant-1",
        request_id="req-1",
        status=status,  # type: ignore[arg-type]
        epoch=epoch,
        stuck=stuck,
        spec=common_pb2.GrantSpec(
            integration_id="demo-pg", agent_id="a", resource="r", permission="read", principal="p"
        ),
    )


async def test_late_fact_does_not_move_status_backwards(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for changed in (
        fact(common_pb2.GRANT_STATUS_GRANTING, 1),
        fact(common_pb2.GRANT_STATUS_REVOKING, 2),
        fact(common_pb2.GRANT_STATUS_ACTIVE, 1),  # arrived late from the other producer
    ):
        async with sessions() as session, session.begin():
            await record_grant_transition(session=session, changed=changed, clock=CLOCK)
    async with sessions() as session:
        row = await session.get(GrantActivity, "grant-1")
    assert row is not None
    assert row.status == common_pb2.GRANT_STATUS_REVOKING


async def test_stuck_flag_follows_the_latest_revoking_fact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for changed in (
        fact(common_pb2.GRANT_STATUS_REVOKING, 2),
        fact(common_pb2.GRANT_STATUS_REVOKING, 2, stuck=True),
    ):
        async with sessions() as session, session.begin():
            await record_grant_transition(session=session, changed=changed, clock=CLOCK)
    async with sessions() as session:
        row = await session.get(GrantActivity, "grant-1")
    assert row is not None and row.stuck


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"integration_id": ""}, "integration_id is required"),
        ({"principal": "alice; DROP ROLE x"}, "principal 'alice; DROP ROLE x' may contain only"),
        ({"duration_seconds": -1}, "duration_seconds must not be negative"),
        ({"justification": "x" * 2001}, "justification is longer than 2000 characters"),
    ],
)
def test_malformed_submissions(overrides: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "integration_id": "demo-pg",
        "resource": "appdb",
        "permission": "read",
        "principal": "alice",
        "duration_seconds": 60,
        "justification": "",
    }
    arguments.update(overrides)
    with pytest.raises(Refused, match=message.replace("(", r"\(")) as refused:
        validate_submission(**arguments)  # type: ignore[arg-type]
    assert refused.value.kind is Refusal.INVALID
