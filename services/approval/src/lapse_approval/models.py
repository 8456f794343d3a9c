"""The approval service's own tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ApprovalBase(DeclarativeBase):
    pass


class CaseStatus:
    PENDING = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "APPROVAL_EXPIRED"
    CANCELED = "CANCELED"


class CaseKind:
    REQUEST = "request"
    # An extension of an active grant that the flow's approvers must decide.
    EXTENSION = "extension"


class ApprovalCase(ApprovalBase):
    """One submitted request as the approval service sees it, or one extension of an active
    grant waiting for approvers (kind extension: `request_id` is then the extension's own id,
    `submitted` the original request's)."""

    __tablename__ = "approval_cases"
    __table_args__ = (Index("ix_approval_cases_pending", "status", "expires_at"),)

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requester: Mapped[str] = mapped_column(String(255))
    flow: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When an undecided request becomes APPROVAL_EXPIRED.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The RequestSubmitted event, kept so the decision can be self-contained.
    submitted: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    auto_approved: Mapped[bool] = mapped_column(default=False)
    # Set when a policy change withdrew or shortened this approval.
    withdrawn: Mapped[bool] = mapped_column(default=False)
    max_duration_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default=CaseKind.REQUEST)
    extends_request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    extend_by_seconds: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class GrantExtension(ApprovalBase):
    """An extension the flow granted to one grant (counted against max_extensions)."""

    __tablename__ = "grant_extensions"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    grant_id: Mapped[str] = mapped_column(String(64), index=True)
    extend_by_seconds: Mapped[int] = mapped_column(BigInteger)
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GrantOfRequest(ApprovalBase):
    """Which request each grant was created for, learnt from the scheduler's grant facts: an
    extension names both, and only a grant of the requester's own request may be extended."""

    __tablename__ = "grants_of_requests"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)


class FlowDocument(ApprovalBase):
    """Every applied set of flow files; the newest one is in force."""

    __tablename__ = "flow_documents"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_by: Mapped[str] = mapped_column(String(255))
    # JSON list of {"name": ..., "content": ...}
    files_json: Mapped[str] = mapped_column(Text)


class ApprovalVote(ApprovalBase):
    __tablename__ = "approval_votes"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    approver: Mapped[str] = mapped_column(String(255))
    approve: Mapped[bool] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    # "base" or the escalation interval that made the approver eligible.
    tier: Mapped[str] = mapped_column(String(32), default="base")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
