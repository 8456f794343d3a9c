"""Walk the audit log and check that no row was altered, removed or reordered."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_audit.hash_chain import link_hash
from lapse_audit.models import CHAIN_HEAD_ID, GENESIS_HASH, AuditChainHead, AuditEventRecord

# Rows are read in batches so verifying a long log does not hold it all in memory.
BATCH_SIZE = 500


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    # The first sequence that is altered or missing; 0 when the chain is intact.
    first_bad_sequence: int
    detail: str


async def verify_chain(session: AsyncSession, *, batch_size: int = BATCH_SIZE) -> ChainVerification:
    """Recompute every link from the first row to the chain head.

    Catches an edited row (its hash no longer matches its columns), a deleted or
    inserted row (sequence gap, or prev_hash not the previous row's hash) and a cut-off
    tail (the last row is not the one the head records). The head's hash is reported on
    success so it can be kept outside the database: only such an external copy also
    catches someone who rewrites the whole chain.
    """
    # The head is read first and the walk stops at it, so events appended while the walk
    # runs are neither checked nor mistaken for tampering.
    head = await session.scalar(select(AuditChainHead).where(AuditChainHead.id == CHAIN_HEAD_ID))
    last_sequence, last_hash = (head.last_sequence, head.last_hash) if head else (0, GENESIS_HASH)
    checked = 0
    expected_sequence, expected_prev_hash = 1, GENESIS_HASH
    while True:
        rows = (
            await session.scalars(
                select(AuditEventRecord)
                .where(AuditEventRecord.sequence >= expected_sequence)
                .where(AuditEventRecord.sequence <= last_sequence)
                .order_by(AuditEventRecord.sequence)
                .limit(batch_size)
            )
        ).all()
        for row in rows:
            problem = _link_problem(row, expected_sequence, expected_prev_hash)
            if problem:
                return ChainVerification(
                    ok=False,
                    events_checked=checked,
                    first_bad_sequence=expected_sequence,
                    detail=problem,
                )
            checked += 1
            expected_sequence, expected_prev_hash = row.sequence + 1, row.hash
        if len(rows) < batch_size:
            break
    if head is None and await _any_event(session):
        return ChainVerification(
            ok=False,
            events_checked=0,
            first_bad_sequence=1,
            detail="events exist but the chain head row is missing",
        )
    if expected_sequence <= last_sequence:
        return ChainVerification(
            ok=False,
            events_checked=checked,
            first_bad_sequence=expected_sequence,
            detail=f"sequences {expected_sequence}..{last_sequence} are missing "
            f"(the chain head records {last_sequence} events)",
        )
    if expected_prev_hash != last_hash:
        return ChainVerification(
            ok=False,
            events_checked=checked,
            first_bad_sequence=last_sequence,
            detail=f"the chain head hash {last_hash} is not the hash of sequence {last_sequence}",
        )
    return ChainVerification(
        ok=True,
        events_checked=checked,
        first_bad_sequence=0,
        detail=f"{checked} events verified; chain head is sequence {last_sequence} "
        f"with hash {last_hash}",
    )


def _link_problem(row: AuditEventRecord, expected_sequence: int, expected_prev_hash: str) -> str:
    if row.sequence != expected_sequence:
        return f"sequence {expected_sequence} is missing (the next row is {row.sequence})"
    if row.prev_hash != expected_prev_hash:
        previous = f"sequence {row.sequence - 1}" if row.sequence > 1 else "the genesis hash"
        return f"sequence {row.sequence}: prev_hash is not the hash of {previous}"
    if link_hash(row) != row.hash:
        return f"sequence {row.sequence}: its hash does not match its contents (row altered)"
    return ""


async def _any_event(session: AsyncSession) -> bool:
    return await session.scalar(select(AuditEventRecord.sequence).limit(1)) is not None
