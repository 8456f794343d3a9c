"""Append one event seen on a topic to the hash-chained audit log."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from lapse_common.messaging.codec import DecodedEvent
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_audit.event_subjects import subjects_named
from lapse_audit.hash_chain import link_hash
from lapse_audit.models import (
    CHAIN_HEAD_ID,
    GENESIS_HASH,
    AuditChainHead,
    AuditEventRecord,
    AuditEventSubject,
)
from lapse_audit.payload_rendering import render_payload_json

_HEAD_KEY = "lapse_audit.chain_head"
# Width of the indexed text columns. The full values stay in the stored envelope.
INDEXED_TEXT_LENGTH = 255


async def record_event(
    session: AsyncSession,
    *,
    event: DecodedEvent[Message],
    topic: str,
    recorded_at: datetime,
    verification: str = "",
) -> AuditEventRecord | None:
    """Store the event as the next link of the chain, in the caller's transaction.

    `verification`: for an agent report, whether its signature verified, kept with it.

    Returns the new row, or None when the event id is already recorded: the inbox drops
    redeliveries before they get here, and this check keeps the operation idempotent on
    its own (another consumer name, a replayed inbox).
    """
    head, appended = await _chain_head_of_transaction(session)
    if event.event_id in appended:
        return None
    # Not flushed first: what this transaction appended is in `appended`, and the rows go to
    # the database together at commit instead of two statements per event.
    with session.no_autoflush:
        already = await session.scalar(
            select(AuditEventRecord.sequence).where(AuditEventRecord.event_id == event.event_id)
        )
    if already is not None:
        return None
    envelope = event.envelope
    record = AuditEventRecord(
        sequence=head.last_sequence + 1,
        event_id=event.event_id,
        type=envelope.type,
        topic=_indexable(topic),
        producer=_indexable(envelope.producer),
        occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
        recorded_at=recorded_at.astimezone(UTC),
        request_id=_indexable(envelope.request_id),
        grant_id=_indexable(envelope.grant_id),
        payload=envelope.SerializeToString(deterministic=True),
        payload_json=render_payload_json(event.payload, verification=verification),
        prev_hash=head.last_hash,
    )
    record.hash = link_hash(record)
    session.add(record)
    head.last_sequence = record.sequence
    head.last_hash = record.hash
    appended.add(event.event_id)
    session.add_all(
        AuditEventSubject(sequence=record.sequence, subject=subject)
        for subject in sorted(subjects_named(record.payload_json))
    )
    return record


async def _chain_head_of_transaction(session: AsyncSession) -> tuple[AuditChainHead, set[str]]:
    """The chain head, locked once per transaction (a consumer appends a whole batch in
    one), and the event ids this transaction appended so far."""
    transaction = session.sync_session.get_transaction()
    held = session.info.get(_HEAD_KEY)
    if held is not None and held[0] is transaction:
        return held[1], held[2]
    head = await _lock_chain_head(session)
    appended: set[str] = set()
    session.info[_HEAD_KEY] = (transaction, head, appended)
    return head, appended


async def _lock_chain_head(session: AsyncSession) -> AuditChainHead:
    """Create the head on the first append, then lock it until the transaction ends.

    On PostgreSQL the row lock orders concurrent appends (several partitions, handlers or
    replicas) into one linear chain. SQLite has no row locks, but the insert below makes
    this transaction the database's single writer from here on, which serializes too.
    """
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(AuditChainHead)
        .values(id=CHAIN_HEAD_ID, last_sequence=0, last_hash=GENESIS_HASH)
        .on_conflict_do_nothing()
    )
    head = await session.scalar(
        select(AuditChainHead)
        .where(AuditChainHead.id == CHAIN_HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert head is not None, "the chain head row was inserted above"
    return head


def _indexable(text: str) -> str:
    # A producer may put anything in these strings; a value too long for the column must
    # not make the insert fail on every redelivery and stall the topic.
    return text[:INDEXED_TEXT_LENGTH]
