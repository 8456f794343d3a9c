"""Walk the audit log and check that no row was altered, removed or reordered, and that
the chain still holds every signed checkpoint it is compared with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lapse_common.audit_checkpoints import Checkpoint
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
    # The head the walk stopped at.
    head_sequence: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints_checked: int = 0


async def verify_chain(
    session: AsyncSession,
    *,
    checkpoints: Sequence[Checkpoint] = (),
    since: Checkpoint | None = None,
    batch_size: int = BATCH_SIZE,
) -> ChainVerification:
    """Recompute every link from the first row (or from `since`) to the chain head.

    Catches an edited row (its hash no longer matches its columns), a deleted or
    inserted row (sequence gap, or prev_hash not the previous row's hash) and a cut-off
    tail (the last row is not the one the head records). `checkpoints` (signatures
    already checked) also catch a consistent rewrite of the whole chain, which the
    database alone cannot: the rewritten chain no longer holds a checkpoint's head hash
    at its sequence, or no longer reaches its sequence.

    `since`: a checkpoint known good; the walk starts after it (the periodic
    checkpointer verifies only what is new since its last checkpoint).
    """
    # The head is read first and the walk stops at it, so events appended while the walk
    # runs are neither checked nor mistaken for tampering. Checkpoints were read before
    # it, so none of them can be ahead of the head unless events were removed.
    head = await session.scalar(select(AuditChainHead).where(AuditChainHead.id == CHAIN_HEAD_ID))
    last_sequence, last_hash = (head.last_sequence, head.last_hash) if head else (0, GENESIS_HASH)
    all_checkpoints = [*checkpoints, *([since] if since else [])]
    result = _Outcome(
        head_sequence=last_sequence, head_hash=last_hash, checked=len(all_checkpoints)
    )
    expected_sequence, expected_prev_hash = 1, GENESIS_HASH
    if since is not None and since.sequence > 0 and since.sequence <= last_sequence:
        anchor = await session.get(AuditEventRecord, since.sequence)
        if anchor is None or anchor.hash != since.head_hash:
            return result.failed(since.sequence, 0, _mismatch(since, anchor, None))
        expected_sequence, expected_prev_hash = since.sequence + 1, since.head_hash
    by_sequence: dict[int, list[Checkpoint]] = {}
    for checkpoint in all_checkpoints:
        by_sequence.setdefault(checkpoint.sequence, []).append(checkpoint)
    last_matched: Checkpoint | None = None
    checked = 0
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
                return result.failed(expected_sequence, checked, problem)
            for checkpoint in by_sequence.get(row.sequence, ()):
                if checkpoint.head_hash != row.hash:
                    return result.failed(
                        row.sequence, checked, _mismatch(checkpoint, row, last_matched)
                    )
                last_matched = checkpoint
            checked += 1
            expected_sequence, expected_prev_hash = row.sequence + 1, row.hash
        if len(rows) < batch_size:
            break
    if head is None and await _any_event(session):
        return result.failed(1, 0, "events exist but the chain head row is missing")
    if expected_sequence <= last_sequence:
        return result.failed(
            expected_sequence,
            checked,
            f"sequences {expected_sequence}..{last_sequence} are missing "
            f"(the chain head records {last_sequence} events)",
        )
    if expected_prev_hash != last_hash:
        return result.failed(
            last_sequence,
            checked,
            f"the chain head hash {last_hash} is not the hash of sequence {last_sequence}",
        )
    beyond = [checkpoint for checkpoint in all_checkpoints if checkpoint.sequence > last_sequence]
    if beyond:
        furthest = max(beyond, key=lambda checkpoint: checkpoint.sequence)
        return result.failed(
            last_sequence + 1,
            checked,
            f"the chain ends at sequence {last_sequence}, but the checkpoint signed at "
            f"{_when(furthest)} records {furthest.sequence} events: events were removed "
            "(and the rest perhaps re-hashed)",
        )
    anchored = f"; it holds {len(all_checkpoints)} signed checkpoint(s)" if all_checkpoints else ""
    return result.verified(
        checked,
        f"{checked} events verified{anchored}; chain head is sequence {last_sequence} "
        f"with hash {last_hash}",
    )


@dataclass(frozen=True)
class _Outcome:
    head_sequence: int
    head_hash: str
    checked: int

    def failed(self, sequence: int, events_checked: int, detail: str) -> ChainVerification:
        return ChainVerification(
            ok=False,
            events_checked=events_checked,
            first_bad_sequence=sequence,
            detail=detail,
            head_sequence=self.head_sequence,
            head_hash=self.head_hash,
            checkpoints_checked=self.checked,
        )

    def verified(self, events_checked: int, detail: str) -> ChainVerification:
        return ChainVerification(
            ok=True,
            events_checked=events_checked,
            first_bad_sequence=0,
            detail=detail,
            head_sequence=self.head_sequence,
            head_hash=self.head_hash,
            checkpoints_checked=self.checked,
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


def _mismatch(
    checkpoint: Checkpoint, row: AuditEventRecord | None, last_matched: Checkpoint | None
) -> str:
    found = f"its hash is {row.hash}" if row is not None else "it is missing"
    where = (
        f"; the checkpoint at sequence {last_matched.sequence} still matches, so the change "
        f"is in sequences {last_matched.sequence + 1}..{checkpoint.sequence}"
        if last_matched is not None
        else ""
    )
    return (
        f"sequence {checkpoint.sequence}: {found}, not {checkpoint.head_hash} as the checkpoint "
        f"signed at {_when(checkpoint)} records: the log up to sequence {checkpoint.sequence} "
        f"was rewritten after it was signed{where}"
    )


def _when(checkpoint: Checkpoint) -> str:
    return checkpoint.signed_at.strftime("%Y-%m-%d %H:%M:%S UTC")


async def _any_event(session: AsyncSession) -> bool:
    return await session.scalar(select(AuditEventRecord.sequence).limit(1)) is not None
