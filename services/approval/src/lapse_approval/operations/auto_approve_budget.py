"""The auto-approval budget: at most N automatic approvals per requester per period."""

from __future__ import annotations

from datetime import datetime

from lapse_common.refusals import Refusal, Refused
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.flows import Flow, format_duration, parse_duration
from lapse_approval.models import ApprovalCase


async def enforce_auto_approve_budget(
    session: AsyncSession, *, flow: Flow, requester: str, now: datetime
) -> None:
    budget = flow.auto_approve_budget
    if budget is None:
        return
    period = parse_duration(budget.per)
    used = await session.scalar(
        select(func.count())
        .select_from(ApprovalCase)
        .where(
            ApprovalCase.requester == requester,
            ApprovalCase.flow == flow.name,
            ApprovalCase.auto_approved.is_(True),
            ApprovalCase.decided_at > now - period,
        )
    )
    if int(used or 0) >= budget.max:
        raise Refused(
            Refusal.EXHAUSTED,
            f"{requester} used the {budget.max} automatic approval(s) flow {flow.name!r} allows "
            f"per {format_duration(period)}; try again later or ask an admin",
        )
