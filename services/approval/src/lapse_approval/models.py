"""The approval service's own tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ApprovalBase(DeclarativeBase):
    pass


class ApprovalCase(ApprovalBase):
    """One submitted request as the approval service sees it."""

    __tablename__ = "approval_cases"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requester: Mapped[str] = mapped_column(String(255))
    flow: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
