"""record_event: one row per event id, linked into one chain, readable by people."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from lapse_audit.handlers import agent_command_topic, fixed_topic, recording_handler
from lapse_audit.models import GENESIS_HASH, AuditEventRecord
from lapse_audit.operations.record_event import record_event
from lapse_audit.operations.verify_chain import verify_chain
from lapse_common.clock import ManualClock
from lapse_common.messaging.codec import DecodedEvent
from lapse_common.messaging.inbox import first_delivery
from lapse_common.pb.lapse.v1 import envelope_pb2
from lapse_common.topics import Topics
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.tests.audit_events import decoded, grant_fact, request_submitted, signed_command

NOW = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)
TOPICS = Topics(prefix="t1.")


async def deliver(
    sessions: async_sessionmaker[AsyncSession], event: DecodedEvent, *, topic: str
) -> None:
    """What subscribe_events does with a decoded event: inbox check and handler in one
    transaction."""
    handler = recording_handler(topic_of=fixed_topic(topic), clock=ManualClock(NOW))
    async with sessions() as session, session.begin():
        if await first_delivery(session, consumer="audit", event_id=event.event_id, now=NOW):
            await handler(session=session, event=event)


async def all_records(sessions: async_sessionmaker[AsyncSession]) -> list[AuditEventRecord]:
    async with sessions() as session:
        query = select(AuditEventRecord).order_by(AuditEventRecord.sequence)
        return list((await session.scalars(query)).all())


async def test_records_the_event_with_its_envelope_fields(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = decoded(grant_fact("g-1", "r-1"), request_id="r-1", grant_id="g-1", producer="sched")

    await deliver(sessions, event, topic=TOPICS.grants)

    [row] = await all_records(sessions)
    assert row.sequence == 1
    assert row.event_id == event.event_id
    assert row.type == "lapse.v1.GrantStatusChanged"
    assert row.topic == "t1.lapse.grants.v1"
    assert row.producer == "sched"
    assert (row.request_id, row.grant_id) == ("r-1", "g-1")
    assert row.occurred_at.replace(tzinfo=UTC) == datetime(2025, 3, 1, 12, 0, 0, 123456, UTC)
    assert row.recorded_at.replace(tzinfo=UTC) == NOW
    assert envelope_pb2.Envelope.FromString(row.payload) == event.envelope
    rendered = json.loads(row.payload_json)
    assert rendered["grant_id"] == "g-1"
    assert rendered["status"] == "GRANT_STATUS_ACTIVE"
    # Fields at their default value are shown too: "not stuck" is worth reading.
    assert rendered["stuck"] is False
    assert row.prev_hash == GENESIS_HASH
    assert len(row.hash) == 64


async def test_a_redelivered_event_is_stored_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = decoded(request_submitted("r-1"), request_id="r-1")

    await deliver(sessions, event, topic=TOPICS.requests)
    await deliver(sessions, event, topic=TOPICS.requests)

    assert [row.event_id for row in await all_records(sessions)] == [event.event_id]


async def test_the_operation_itself_is_idempotent_without_the_inbox(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = decoded(request_submitted("r-1"), request_id="r-1")

    async with sessions() as session, session.begin():
        first = await record_event(session, event=event, topic=TOPICS.requests, recorded_at=NOW)
    async with sessions() as session, session.begin():
        second = await record_event(session, event=event, topic=TOPICS.requests, recorded_at=NOW)

    assert first is not None and first.sequence == 1
    assert second is None
    assert len(await all_records(sessions)) == 1


async def test_each_row_links_to_the_previous_one(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    for index in range(3):
        await deliver(sessions, decoded(request_submitted(f"r-{index}")), topic=TOPICS.requests)

    rows = await all_records(sessions)
    assert [row.sequence for row in rows] == [1, 2, 3]
    assert [row.prev_hash for row in rows] == [GENESIS_HASH, rows[0].hash, rows[1].hash]
    assert len({row.hash for row in rows}) == 3


async def test_concurrent_deliveries_form_one_linear_chain(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    events = [decoded(grant_fact(f"g-{index}", "r-1")) for index in range(20)]

    await asyncio.gather(*(deliver(sessions, event, topic=TOPICS.grants) for event in events))

    rows = await all_records(sessions)
    assert [row.sequence for row in rows] == list(range(1, 21))
    assert {row.event_id for row in rows} == {event.event_id for event in events}
    async with sessions() as session:
        verification = await verify_chain(session)
    assert verification.ok, verification.detail
    assert verification.events_checked == 20


async def test_a_signed_command_shows_the_command_it_carries(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = decoded(signed_command("g-7", "pg-agent-1"), grant_id="g-7")
    handler = recording_handler(topic_of=agent_command_topic(TOPICS), clock=ManualClock(NOW))

    async with sessions() as session, session.begin():
        await handler(session=session, event=event)

    [row] = await all_records(sessions)
    assert row.topic == "t1.lapse.agent.pg-agent-1.commands.v1"
    rendered = json.loads(row.payload_json)
    assert rendered["key_id"] == "platform-1"
    assert rendered["decoded_command"]["grant_id"] == "g-7"
    assert rendered["decoded_command"]["kind"] == "COMMAND_KIND_GRANT"
    assert rendered["decoded_command"]["spec"]["agent_id"] == "pg-agent-1"
    assert rendered["signature_verified_by_audit"] is False


def test_a_command_without_a_usable_agent_id_names_the_topic_family() -> None:
    unreadable = signed_command("g-8", "agent")
    unreadable.command = b"\xff\xff not protobuf"
    no_agent = signed_command("g-9", "")

    topic_of = agent_command_topic(TOPICS)

    assert topic_of(decoded(unreadable)) == TOPICS.agent_commands_pattern
    assert topic_of(decoded(no_agent)) == TOPICS.agent_commands_pattern


async def test_overlong_envelope_strings_are_cut_to_fit_their_index_columns(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = decoded(request_submitted("r-1"), request_id="r" * 1000, producer="p" * 300)

    await deliver(sessions, event, topic=TOPICS.requests)

    [row] = await all_records(sessions)
    assert row.request_id == "r" * 255
    assert row.producer == "p" * 255
    # The stored envelope still has the full values.
    assert envelope_pb2.Envelope.FromString(row.payload).request_id == "r" * 1000


async def test_rows_are_counted_by_event_id_uniqueness(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    event = decoded(request_submitted("r-1"))
    await asyncio.gather(*(deliver(sessions, event, topic=TOPICS.requests) for _ in range(5)))

    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(AuditEventRecord))
    assert count == 1


async def test_a_payload_json_cannot_show_is_still_recorded(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    fact = grant_fact("g-1", "r-1")
    fact.expires_at.seconds = 10**13  # beyond year 9999: no JSON form exists

    await deliver(sessions, decoded(fact), topic=TOPICS.grants)

    [row] = await all_records(sessions)
    rendered = json.loads(row.payload_json)
    assert "Timestamp is not valid" in rendered["json_rendering_error"]
    assert 'grant_id: "g-1"' in rendered["text"]


async def test_concurrent_appends_serialize_without_the_inbox_too(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def append(index: int) -> None:
        async with sessions() as session, session.begin():
            event = decoded(grant_fact(f"g-{index}", "r-1"))
            await record_event(session, event=event, topic=TOPICS.grants, recorded_at=NOW)

    await asyncio.gather(*(append(index) for index in range(15)))

    async with sessions() as session:
        verification = await verify_chain(session)
    assert verification.ok, verification.detail
    assert verification.events_checked == 15
