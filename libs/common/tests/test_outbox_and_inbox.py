"""Outbox relay and inbox on SQLite (the zero-setup backend); the PostgreSQL path is covered
by the integration tests against the real database."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from datetime import UTC, datetime

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from lapse_common.clock import ManualClock
from lapse_common.messaging.codec import decode
from lapse_common.messaging.inbox import first_delivery
from lapse_common.messaging.outbox import OutboxMessage, OutboxRelay, enqueue
from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class RecordingPublisher:
    """Stands in for Kafka in these unit tests only; it can be told to fail, either when a
    record is handed over (`fail`, `refuse_keys`: as aiokafka refuses an oversized record at
    once) or in its acknowledgement (`unacknowledged_keys`: as a broker answers)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.fail = False
        self.refuse_keys: dict[str, Exception] = {}
        self.unacknowledged_keys: dict[str, Exception] = {}

    async def publish(self, *, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        await (await self.send(topic=topic, key=key, value=value, headers=headers))

    async def send(
        self, *, topic: str, key: str, value: bytes, headers: dict[str, str]
    ) -> Awaitable[object]:
        if self.fail:
            raise ConnectionError("broker unavailable")
        if key in self.refuse_keys:
            raise self.refuse_keys[key]
        answer = self.unacknowledged_keys.get(key)
        if answer is None:
            self.published.append((topic, key, value, headers))
        return self._acknowledgement(answer)

    async def _acknowledgement(self, answer: Exception | None) -> object:
        if answer is not None:
            raise answer
        return None


CLOCK = ManualClock(datetime(2026, 11, 29, tzinfo=UTC))


async def stage(sessions: async_sessionmaker[AsyncSession], grant_ids: list[str]) -> list[str]:
    async with sessions() as session, session.begin():
        return [
            enqueue(
                session,
                topic="lapse.grants.v1",
                key=g,
                payload=events_pb2.GrantStatusChanged(grant_id=g),
                producer="test",
                clock=CLOCK,
                grant_id=g,
            )
            for g in grant_ids
        ]


async def test_relay_publishes_in_commit_order_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event_ids = await stage(sessions, ["g-1", "g-2", "g-3"])
    publisher = RecordingPublisher()
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 0
    assert [decode(value).event_id for _, _, value, _ in publisher.published] == event_ids
    topic, key, _, headers = publisher.published[0]
    assert (topic, key) == ("lapse.grants.v1", "g-1")
    assert headers["lapse-event-id"] == event_ids[0]
    assert headers["lapse-type"] == "lapse.v1.GrantStatusChanged"


async def test_failed_publish_keeps_rows_for_the_next_pass(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await stage(sessions, ["g-1"])
    publisher = RecordingPublisher()
    publisher.fail = True
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    async with sessions() as session:
        pending = (await session.execute(select(OutboxMessage))).scalars().all()
    assert [row.published_at for row in pending] == [None]
    publisher.fail = False
    assert await relay.relay_once() == 1
    assert json.loads(pending[0].headers_json)["lapse-type"] == "lapse.v1.GrantStatusChanged"


async def test_row_kafka_refuses_for_good_is_set_aside_and_the_rows_behind_it_go_out(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event_ids = await stage(sessions, ["g-1", "g-poison", "g-3"])
    publisher = RecordingPublisher()
    publisher.refuse_keys["g-poison"] = MessageSizeTooLargeError("2097152 bytes > 1048576")
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    assert await relay.relay_once() == 3
    assert [key for _, key, _, _ in publisher.published] == ["g-1", "g-3"]
    async with sessions() as session:
        rows = {row.key: row for row in (await session.execute(select(OutboxMessage))).scalars()}
    poison = rows["g-poison"]
    assert poison.event_id == event_ids[1]
    assert poison.published_at is None
    assert poison.set_aside_at is not None
    assert poison.set_aside_reason is not None
    assert poison.set_aside_reason.startswith("MessageSizeTooLargeError")
    # Set aside means set aside: the next passes neither retry it nor stall on it.
    assert await relay.relay_once() == 0
    assert [key for _, key, _, _ in publisher.published] == ["g-1", "g-3"]


async def test_rows_kafka_acknowledged_are_not_sent_again_when_another_failed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await stage(sessions, ["g-1", "g-2", "g-3"])
    publisher = RecordingPublisher()
    publisher.unacknowledged_keys["g-2"] = KafkaTimeoutError()
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    with pytest.raises(KafkaTimeoutError):
        await relay.relay_once()
    async with sessions() as session:
        rows = {row.key: row for row in (await session.execute(select(OutboxMessage))).scalars()}
    assert rows["g-1"].published_at is not None
    assert rows["g-2"].published_at is None and rows["g-2"].set_aside_at is None
    assert rows["g-3"].published_at is not None
    del publisher.unacknowledged_keys["g-2"]
    assert await relay.relay_once() == 1
    assert [key for _, key, _, _ in publisher.published] == ["g-1", "g-3", "g-2"]


async def test_a_refusal_in_the_acknowledgement_sets_the_row_aside(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await stage(sessions, ["g-1", "g-poison", "g-3"])
    publisher = RecordingPublisher()
    publisher.unacknowledged_keys["g-poison"] = RecordTooLargeError()
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    assert await relay.relay_once() == 3
    async with sessions() as session:
        rows = {row.key: row for row in (await session.execute(select(OutboxMessage))).scalars()}
    assert rows["g-poison"].set_aside_at is not None and rows["g-poison"].published_at is None
    assert [key for _, key, _, _ in publisher.published] == ["g-1", "g-3"]
    assert await relay.relay_once() == 0


async def test_a_cluster_failure_while_handing_over_leaves_that_row_and_the_rest_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await stage(sessions, ["g-1", "g-2", "g-3"])
    publisher = RecordingPublisher()
    publisher.refuse_keys["g-2"] = TopicAuthorizationFailedError()
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    with pytest.raises(TopicAuthorizationFailedError):
        await relay.relay_once()
    assert [key for _, key, _, _ in publisher.published] == ["g-1"]
    del publisher.refuse_keys["g-2"]
    assert await relay.relay_once() == 2
    assert [key for _, key, _, _ in publisher.published] == ["g-1", "g-2", "g-3"]


async def test_cluster_errors_are_retried_not_set_aside(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await stage(sessions, ["g-1"])
    publisher = RecordingPublisher()
    publisher.refuse_keys["g-1"] = TopicAuthorizationFailedError()
    relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=CLOCK)
    with pytest.raises(TopicAuthorizationFailedError):
        await relay.relay_once()
    del publisher.refuse_keys["g-1"]
    assert await relay.relay_once() == 1
    assert [key for _, key, _, _ in publisher.published] == ["g-1"]


async def test_rolled_back_state_change_leaves_no_event(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            enqueue(
                session,
                topic="t",
                key="k",
                payload=events_pb2.GrantStatusChanged(grant_id="g"),
                producer="test",
                clock=CLOCK,
            )
            raise RuntimeError("handler failed after staging its event")
    relay = OutboxRelay(sessions=sessions, publisher=RecordingPublisher(), clock=CLOCK)
    assert await relay.relay_once() == 0


async def test_inbox_accepts_an_event_once_per_consumer(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        assert await first_delivery(session, consumer="a", event_id="e-1", now=CLOCK.now())
        assert not await first_delivery(session, consumer="a", event_id="e-1", now=CLOCK.now())
        assert await first_delivery(session, consumer="b", event_id="e-1", now=CLOCK.now())
