"""Batched consumption on SQLite: one transaction per partition, the inbox in one statement,
offsets committed exactly up to what was handled, and a record that fails or is refused
handled on its own without losing or re-applying the rest of its batch. The same code runs
against Kafka and PostgreSQL in tests/integration (test_delivery, test_batch_crash)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from google.protobuf.message import Message
from lapse_common.clock import ManualClock
from lapse_common.messaging.batch_handling import BatchHandling, RefusedMessage
from lapse_common.messaging.codec import DecodedEvent, build_envelope, decode
from lapse_common.messaging.inbox import InboxRecord
from lapse_common.messaging.outbox import OutboxMessage, enqueue
from lapse_common.messaging.payload_routes import Route, on
from lapse_common.messaging.quarantine import Quarantine
from lapse_common.pb.lapse.v1 import events_pb2
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

CLOCK = ManualClock(datetime(2026, 12, 4, 9, 0, tzinfo=UTC))
TOPIC = "lapse.revoke-requests.v1"


class QuarantinePublisher:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def publish(self, *, topic: str, key: str, value: bytes, headers: dict[str, str]) -> None:
        quarantined = decode(value).payload
        assert isinstance(quarantined, events_pb2.QuarantinedMessage)
        self.reasons.append(quarantined.reason)


class RecordingOffsets:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})


class EffectHandler:
    """Applies an event by staging one outbox row named after it, so what was applied (and
    how often) can be counted in the database; can be told to refuse a grant or fail on it."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        # How many more times handling a grant fails (as a database outage would).
        self.failures: dict[str, int] = {}
        self.calls = 0

    async def __call__(
        self, *, session: AsyncSession, event: DecodedEvent[events_pb2.RevokeRequested]
    ) -> None:
        self.calls += 1
        payload = event.payload
        enqueue(
            session,
            topic="effects",
            key=payload.grant_id,
            payload=payload,
            producer="test",
            clock=CLOCK,
        )
        await session.flush()
        if payload.grant_id in self.refuse:
            raise RefusedMessage(f"{payload.grant_id} is forged")
        if self.failures.get(payload.grant_id, 0) > 0:
            self.failures[payload.grant_id] -= 1
            raise RuntimeError("database went away")


def record(grant_id: str, offset: int, *, partition: int = 0, event_id: str = "") -> Any:
    return record_of(
        events_pb2.RevokeRequested(grant_id=grant_id),
        offset,
        key=grant_id,
        partition=partition,
        event_id=event_id or f"event-{grant_id}",
    )


def record_of(
    payload: Message, offset: int, *, key: str, partition: int = 0, event_id: str = ""
) -> Any:
    envelope = build_envelope(
        payload, producer="test", occurred_at=CLOCK.now(), event_id=event_id or f"event-{key}"
    )
    value = envelope.SerializeToString()
    return ConsumerRecord(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[],
    )


def garbage(offset: int) -> Any:
    return ConsumerRecord(
        topic=TOPIC,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"x",
        value=b"not a lapse message",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=19,
        headers=[],
    )


def handling(
    sessions: async_sessionmaker[AsyncSession], handler: EffectHandler, publisher: Any
) -> BatchHandling:
    return routed(sessions, [on(events_pb2.RevokeRequested, handler=handler)], publisher)


def routed(
    sessions: async_sessionmaker[AsyncSession], routes: list[Route], publisher: Any
) -> BatchHandling:
    return BatchHandling(
        consumer="probe-consumer",
        routes=routes,
        sessions=sessions,
        relay=None,
        quarantine=Quarantine(publisher=publisher, topic="q", producer="probe", clock=CLOCK),
        clock=CLOCK,
        deduplicate=True,
    )


async def applied(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(
            select(OutboxMessage.key, func.count()).group_by(OutboxMessage.key)
        )
        return {key: count for key, count in rows.all()}


async def inbox_size(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(InboxRecord)) or 0)


PARTITION_0 = TopicPartition(TOPIC, 0)
PARTITION_1 = TopicPartition(TOPIC, 1)


async def test_a_batch_is_applied_once_and_committed_after_its_last_record(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handler, offsets = EffectHandler(), RecordingOffsets()
    batch = [record(f"g{i}", 10 + i) for i in range(50)]
    await handling(sessions, handler, QuarantinePublisher()).handle(batch, offsets=offsets)
    assert await applied(sessions) == {f"g{i}": 1 for i in range(50)}
    assert await inbox_size(sessions) == 50
    assert offsets.commits == [{PARTITION_0: 60}]
    assert offsets.seeks == []

    # The same batch again (a redelivery after a crash before the commit): nothing applied.
    await handling(sessions, handler, QuarantinePublisher()).handle(batch, offsets=offsets)
    assert await applied(sessions) == {f"g{i}": 1 for i in range(50)}
    assert handler.calls == 50


async def test_an_event_twice_in_one_batch_is_applied_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handler = EffectHandler()
    batch = [record("g1", 0), record("g1", 1), record("g2", 2)]
    await handling(sessions, handler, QuarantinePublisher()).handle(
        batch, offsets=RecordingOffsets()
    )
    assert await applied(sessions) == {"g1": 1, "g2": 1}


async def test_a_refused_record_is_quarantined_and_the_rest_of_its_batch_applied_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handler, offsets, publisher = EffectHandler(), RecordingOffsets(), QuarantinePublisher()
    handler.refuse = {"g2"}
    batch = [record(f"g{i}", i) for i in range(5)]
    await handling(sessions, handler, publisher).handle(batch, offsets=offsets)
    # Nothing the refused handler wrote is kept; every other record is applied exactly once.
    assert await applied(sessions) == {"g0": 1, "g1": 1, "g3": 1, "g4": 1}
    assert publisher.reasons == ["g2 is forged"]
    assert await inbox_size(sessions) == 4
    assert offsets.commits == [{PARTITION_0: 5}]


async def test_a_failure_stops_its_partition_at_that_record_and_nothing_is_lost_or_doubled(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lapse_common.messaging.batch_handling.REDELIVERY_PAUSE_SECONDS", 0)
    handler, offsets = EffectHandler(), RecordingOffsets()
    # Fails with the batch and again on its own, then works when read again.
    handler.failures = {"g3": 2}
    first = [record(f"g{i}", i) for i in range(6)]
    other_partition = [record(f"h{i}", 100 + i, partition=1) for i in range(3)]
    batches = handling(sessions, handler, QuarantinePublisher())
    await batches.handle([*first, *other_partition], offsets=offsets)
    # The records before the failure are applied and committed; the partition is read again
    # from the failed one; the other partition is unaffected.
    assert await applied(sessions) == {"g0": 1, "g1": 1, "g2": 1, "h0": 1, "h1": 1, "h2": 1}
    assert offsets.seeks == [(PARTITION_0, 3)]
    assert offsets.commits == [{PARTITION_0: 3, PARTITION_1: 103}]

    # Kafka delivers partition 0 again from offset 3 (with some prefetched overlap).
    await batches.handle(first[2:], offsets=offsets)
    assert await applied(sessions) == {
        **{f"g{i}": 1 for i in range(6)},
        **{f"h{i}": 1 for i in range(3)},
    }
    assert offsets.commits[-1] == {PARTITION_0: 6}


async def test_garbage_in_a_batch_is_quarantined_and_the_rest_applied(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handler, offsets, publisher = EffectHandler(), RecordingOffsets(), QuarantinePublisher()
    batch = [record("g0", 0), garbage(1), record("g2", 2)]
    await handling(sessions, handler, publisher).handle(batch, offsets=offsets)
    assert await applied(sessions) == {"g0": 1, "g2": 1}
    assert len(publisher.reasons) == 1
    assert offsets.commits == [{PARTITION_0: 3}]


async def test_when_the_quarantine_is_down_the_partition_is_read_again_from_the_garbage(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lapse_common.messaging.batch_handling.REDELIVERY_PAUSE_SECONDS", 0)

    class DownPublisher:
        async def publish(self, **_: Any) -> None:
            raise ConnectionError("Kafka unreachable")

    handler, offsets = EffectHandler(), RecordingOffsets()
    batch = [record("g0", 0), garbage(1), record("g2", 2)]
    await handling(sessions, handler, DownPublisher()).handle(batch, offsets=offsets)
    assert offsets.seeks == [(PARTITION_0, 1)]
    assert offsets.commits == [{PARTITION_0: 1}]
    # Read again with the quarantine back: the garbage goes there, g2 is not applied twice.
    publisher = QuarantinePublisher()
    await handling(sessions, handler, publisher).handle(batch[1:], offsets=offsets)
    assert await applied(sessions) == {"g0": 1, "g2": 1}
    assert len(publisher.reasons) == 1


async def test_each_payload_type_goes_to_its_route_and_one_no_route_takes_is_skipped(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    seen: list[str] = []

    async def on_revoke(
        *, session: AsyncSession, event: DecodedEvent[events_pb2.RevokeRequested]
    ) -> None:
        seen.append(f"revoke {event.payload.grant_id}")

    async def on_heartbeat(
        *,
        session: AsyncSession,
        event: DecodedEvent[events_pb2.SignedAgentReport | events_pb2.AgentHeartbeat],
    ) -> None:
        seen.append(f"{type(event.payload).__name__} {event.payload.agent_id}")

    offsets, publisher = RecordingOffsets(), QuarantinePublisher()
    batches = routed(
        sessions,
        [
            on(events_pb2.RevokeRequested, handler=on_revoke),
            on(events_pb2.SignedAgentReport, events_pb2.AgentHeartbeat, handler=on_heartbeat),
        ],
        publisher,
    )
    batch = [
        record("g0", 0),
        record_of(events_pb2.AgentHeartbeat(agent_id="a1"), 1, key="a1"),
        record_of(events_pb2.GrantStatusChanged(grant_id="g9"), 2, key="g9"),
        record_of(events_pb2.SignedAgentReport(agent_id="a2"), 3, key="a2"),
        record("g4", 4),
    ]
    await batches.handle(batch, offsets=offsets)
    assert seen == [
        "revoke g0",
        "AgentHeartbeat a1",
        "SignedAgentReport a2",
        "revoke g4",
    ]
    # The GrantStatusChanged is no concern of this consumer: skipped, not quarantined.
    assert publisher.reasons == []
    assert offsets.commits == [{PARTITION_0: 5}]


async def test_a_route_for_every_payload_takes_every_type(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    seen: list[str] = []

    async def record_any(*, session: AsyncSession, event: DecodedEvent[Message]) -> None:
        seen.append(event.type)

    batch = [record("g0", 0), record_of(events_pb2.AgentHeartbeat(agent_id="a1"), 1, key="a1")]
    await routed(sessions, [on(Message, handler=record_any)], QuarantinePublisher()).handle(
        batch, offsets=RecordingOffsets()
    )
    assert seen == ["lapse.v1.RevokeRequested", "lapse.v1.AgentHeartbeat"]


async def test_a_payload_type_routed_twice_is_refused_when_subscribing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handler = EffectHandler()
    with pytest.raises(ValueError, match="lapse.v1.RevokeRequested and lapse.v1.RevokeRequested"):
        routed(
            sessions,
            [
                on(events_pb2.RevokeRequested, handler=handler),
                on(events_pb2.SignedAgentReport, events_pb2.RevokeRequested, handler=handler),
            ],
            QuarantinePublisher(),
        )
    with pytest.raises(ValueError, match="every payload and lapse.v1.RevokeRequested"):
        routed(
            sessions,
            [on(Message, handler=handler), on(events_pb2.RevokeRequested, handler=handler)],
            QuarantinePublisher(),
        )
    with pytest.raises(ValueError, match="at least one route"):
        routed(sessions, [], QuarantinePublisher())
