"""The agent registry: enrolling, rotating and disabling each write the registry row and
publish the change every verifier reads, in one transaction; misuse is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lapse_common.agent_reports import key_id_of
from lapse_common.auth import ensure_keypair
from lapse_common.clock import ManualClock
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.codec import decode
from lapse_common.messaging.outbox import OutboxMessage
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from lapse_revoker.models import RevokerBase
from lapse_revoker.operations.disable_agent import disable_agent
from lapse_revoker.operations.register_agent_key import register_agent_key
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

TOPICS = Topics()
CLOCK = ManualClock(datetime(2026, 12, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_for_service(f"sqlite+aiosqlite:///{tmp_path}/r.db", schema="revoker")
    await create_schema(engine, schema="revoker", metadatas=[Base.metadata, RevokerBase.metadata])
    yield session_factory(engine)
    await engine.dispose()


async def published(
    sessions: async_sessionmaker[AsyncSession],
) -> list[events_pb2.AgentRegistrationChanged]:
    async with sessions() as session, session.begin():
        rows = list((await session.execute(select(OutboxMessage))).scalars())
        await session.execute(delete(OutboxMessage))
    changes = []
    for row in rows:
        assert (row.topic, row.key) == (TOPICS.agent_registry, "agent-a")
        payload = decode(row.value).payload
        assert isinstance(payload, events_pb2.AgentRegistrationChanged)
        changes.append(payload)
    return changes


async def register(
    sessions: async_sessionmaker[AsyncSession],
    public_pem: str,
    *,
    rotate: bool,
    agent: str = "agent-a",
) -> None:
    async with sessions() as session, session.begin():
        await register_agent_key(
            session=session,
            agent_id=agent,
            public_key_pem=public_pem,
            rotate=rotate,
            actor="ops",
            topics=TOPICS,
            clock=CLOCK,
        )


async def test_enroll_rotate_and_disable_publish_each_change(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    _, first = ensure_keypair(tmp_path, "first")
    _, second = ensure_keypair(tmp_path, "second")
    await register(sessions, first.read_text(), rotate=False)
    [enrolled] = await published(sessions)
    assert enrolled.change == events_pb2.AGENT_REGISTRATION_CHANGE_ENROLLED
    assert enrolled.key_id == key_id_of(first.read_bytes())
    assert enrolled.public_key_pem == first.read_text() and enrolled.actor == "ops"

    # The same enrollment again is no change; another key is a rotation, not an enrollment.
    await register(sessions, first.read_text(), rotate=False)
    assert await published(sessions) == []
    with pytest.raises(Refused, match="with another key: rotate its key instead") as refused:
        await register(sessions, second.read_text(), rotate=False)
    assert refused.value.kind is Refusal.ALREADY_EXISTS
    await register(sessions, second.read_text(), rotate=True)
    [rotated] = await published(sessions)
    assert rotated.change == events_pb2.AGENT_REGISTRATION_CHANGE_KEY_ROTATED
    assert rotated.key_id == key_id_of(second.read_bytes())

    async with sessions() as session, session.begin():
        await disable_agent(
            session=session,
            agent_id="agent-a",
            reason="host lost",
            actor="ops",
            topics=TOPICS,
            clock=CLOCK,
        )
    [disabled] = await published(sessions)
    assert disabled.change == events_pb2.AGENT_REGISTRATION_CHANGE_DISABLED
    assert (disabled.key_id, disabled.public_key_pem, disabled.reason) == ("", "", "host lost")
    # Disabled: its key can no longer be rotated, only enrolled again.
    with pytest.raises(Refused, match="is not enrolled: enroll it first") as refused:
        await register(sessions, first.read_text(), rotate=True)
    assert refused.value.kind is Refusal.NOT_FOUND
    await register(sessions, first.read_text(), rotate=False)
    assert [c.change for c in await published(sessions)] == [
        events_pb2.AGENT_REGISTRATION_CHANGE_ENROLLED
    ]


async def test_bad_agent_ids_and_keys_are_refused_and_nothing_is_published(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    not_a_key = tmp_path / "not-a-key.pub"
    not_a_key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    huge = tmp_path / "huge.pub"
    huge.write_text("A" * 5000)
    _, good = ensure_keypair(tmp_path, "good")
    for public, agent, message in (
        (not_a_key, "agent-a", "public_key_pem:"),
        (huge, "agent-a", "an Ed25519 key in PEM is about 113"),
        (good, "Agent A!", "must be 1-63 lowercase"),
    ):
        with pytest.raises(Refused, match=message) as refused:
            await register(sessions, public.read_text(), rotate=False, agent=agent)
        assert refused.value.kind is Refusal.INVALID
    with pytest.raises(Refused, match="is not enrolled") as refused:
        async with sessions() as session, session.begin():
            await disable_agent(
                session=session,
                agent_id="agent-a",
                reason="",
                actor="ops",
                topics=TOPICS,
                clock=CLOCK,
            )
    assert refused.value.kind is Refusal.NOT_FOUND
    async with sessions() as session:
        assert list((await session.execute(select(OutboxMessage))).scalars()) == []
