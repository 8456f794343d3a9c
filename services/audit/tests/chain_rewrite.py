"""The attack the checkpoints exist for: someone with write access to the audit database
deletes one event, renumbers the rest and recomputes every hash and the head, so the
chain is consistent again and the database alone cannot tell."""

from __future__ import annotations

from lapse_audit.hash_chain import link_hash
from lapse_audit.models import (
    CHAIN_HEAD_ID,
    AuditChainHead,
    AuditEventRecord,
    AuditEventSubject,
)
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

_COPIED = (
    "event_id",
    "type",
    "topic",
    "producer",
    "occurred_at",
    "recorded_at",
    "request_id",
    "grant_id",
    "payload",
    "payload_json",
)


async def delete_and_rehash(session: AsyncSession, *, sequence: int) -> None:
    """Remove event `sequence` and rebuild a consistent chain after it, in the caller's
    transaction."""
    # Like an append, hold the head row so the live service waits until the rewrite is in.
    await session.execute(
        select(AuditChainHead).where(AuditChainHead.id == CHAIN_HEAD_ID).with_for_update()
    )
    later = (
        await session.scalars(
            select(AuditEventRecord)
            .where(AuditEventRecord.sequence > sequence)
            .order_by(AuditEventRecord.sequence)
        )
    ).all()
    kept = [{name: getattr(row, name) for name in _COPIED} for row in later]
    previous = await session.get(AuditEventRecord, sequence - 1) if sequence > 1 else None
    prev_hash = previous.hash if previous is not None else "0" * 64
    await session.execute(delete(AuditEventSubject).where(AuditEventSubject.sequence >= sequence))
    await session.execute(delete(AuditEventRecord).where(AuditEventRecord.sequence >= sequence))
    await session.flush()
    session.expunge_all()
    next_sequence = sequence
    for columns in kept:
        record = AuditEventRecord(sequence=next_sequence, prev_hash=prev_hash, **columns)
        record.hash = link_hash(record)
        session.add(record)
        prev_hash, next_sequence = record.hash, next_sequence + 1
    await session.flush()
    head = await session.get(AuditChainHead, CHAIN_HEAD_ID)
    assert head is not None
    head.last_sequence, head.last_hash = next_sequence - 1, prev_hash
