"""The audit service's tables: the append-only event log and the head of its hash chain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Every row's prev_hash points at the previous row's hash; the first row points here.
GENESIS_HASH = "0" * 64
# The chain head is a single row; appends lock it to serialize themselves.
CHAIN_HEAD_ID = 1


class AuditBase(DeclarativeBase):
    """Base of the audit service's own tables."""


class AuditEventRecord(AuditBase):
    """One event as it was seen on a Lapse topic. Rows are only ever inserted."""

    __tablename__ = "audit_events"

    # Assigned from the chain head under its lock rather than by a database sequence, so
    # sequences are gapless (a missing number means a deleted row) and the hash, which
    # covers the sequence, is known before the single INSERT.
    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(255), index=True)
    topic: Mapped[str] = mapped_column(String(255))
    producer: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(String(255), index=True)
    grant_id: Mapped[str] = mapped_column(String(255), index=True)
    # The envelope exactly as decoded (deterministic protobuf serialization): the record
    # of truth. The columns above are copies of it for indexing.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # The payload rendered as JSON for people; covered by the hash like every column.
    payload_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(AuditBase):
    """The last link of the chain. Locking this row serializes appends across partitions,
    handlers and replicas; comparing it with the last row detects a truncated tail."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_sequence: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditEventSubject(AuditBase):
    """A person an event names (requester, actor, approver, operator, principal), so the
    log can be listed by person without reading every payload.

    An index derived from `payload_json`, which the chain covers; it is not itself in the
    chain, so editing it can only hide a row from a filtered listing, never from
    VerifyChain or an unfiltered export.
    """

    __tablename__ = "audit_event_subjects"

    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("audit_events.sequence"),
        primary_key=True,
    )
    subject: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
