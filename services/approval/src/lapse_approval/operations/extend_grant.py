"""The requester asks for more time on an active grant: the flow's limits decide, and the
flow's approvers too when it says extensions need approval."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from lapse_common.auth import Identity
from lapse_common.clock import Clock
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.decisions import approve_extension, extensions_used
from lapse_approval.flows import Catalog, format_duration, parse_duration
from lapse_approval.models import ApprovalCase, CaseKind, CaseStatus, GrantOfRequest


@dataclass(frozen=True)
class ExtensionOutcome:
    added: timedelta
    number: int
    left: int
    # Set when the flow's approvers must decide it: the id they approve or reject.
    pending_id: str = ""


async def extend_grant(
    *,
    session: AsyncSession,
    identity: Identity,
    request_id: str,
    grant_id: str,
    extend_by: timedelta | None,
    catalog: Catalog,
    topics: Topics,
    clock: Clock,
) -> ExtensionOutcome:
    case = await session.get(ApprovalCase, request_id, with_for_update=True)
    if case is None or case.requester != identity.subject or case.kind != CaseKind.REQUEST:
        raise Refused(Refusal.NOT_FOUND, f"no request {request_id!r} of yours")
    if case.status != CaseStatus.APPROVED or case.withdrawn:
        raise Refused(
            Refusal.INVALID, f"request {request_id} is not an active approval ({case.status})"
        )
    owner = await session.get(GrantOfRequest, grant_id)
    if owner is None or owner.request_id != request_id:
        # The same answer whether the grant is someone else's or unknown: nothing about
        # other people's grants is revealed, and their extension budget is not touched.
        raise Refused(
            Refusal.NOT_FOUND,
            f"request {request_id} has no grant {grant_id!r} (a grant that has just become "
            "active may take a moment to be known here)",
        )
    flow = next((f for f in catalog.flows if f.name == case.flow), None)
    if flow is None:
        raise Refused(Refusal.FORBIDDEN, f"flow {case.flow!r} no longer exists")
    if flow.max_extensions == 0:
        raise Refused(Refusal.FORBIDDEN, f"flow {flow.name!r} allows no extensions")
    waiting = (
        await session.execute(
            select(ApprovalCase.request_id).where(
                ApprovalCase.grant_id == grant_id, ApprovalCase.status == CaseStatus.PENDING
            )
        )
    ).scalar()
    if waiting is not None:
        raise Refused(
            Refusal.INVALID,
            f"extension {waiting} of grant {grant_id} is still waiting for approval",
        )
    used = await extensions_used(session, grant_id=grant_id)
    if used >= flow.max_extensions:
        raise Refused(
            Refusal.FORBIDDEN,
            f"flow {flow.name!r} allows {flow.max_extensions} extension(s) and grant "
            f"{grant_id} has had {used}",
        )
    added = extend_by or flow.extension_duration
    if added > flow.extension_duration:
        raise Refused(
            Refusal.INVALID,
            f"an extension adds at most {format_duration(flow.extension_duration)} "
            f"under flow {flow.name!r}",
        )
    seconds = int(added.total_seconds())
    if flow.extensions_need_approval:
        extension_id = f"ext-{uuid.uuid4().hex[:20]}"
        session.add(
            ApprovalCase(
                request_id=extension_id,
                requester=case.requester,
                flow=flow.name,
                status=CaseStatus.PENDING,
                received_at=clock.now(),
                expires_at=clock.now() + parse_duration(flow.policy.timeout),
                submitted=case.submitted,
                kind=CaseKind.EXTENSION,
                extends_request_id=request_id,
                grant_id=grant_id,
                extend_by_seconds=seconds,
            )
        )
        return ExtensionOutcome(
            added=added,
            number=used + 1,
            left=flow.max_extensions - used - 1,
            pending_id=extension_id,
        )
    number = await approve_extension(
        session,
        request_id=request_id,
        requester=case.requester,
        grant_id=grant_id,
        extend_by_seconds=seconds,
        approved_by=f"flow {flow.name}",
        extension_id="",
        topics=topics,
        clock=clock,
    )
    return ExtensionOutcome(added=added, number=number, left=flow.max_extensions - number)
