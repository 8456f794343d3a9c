"""The requester asks for more time on an active grant; the flow's limits decide."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.auth import Identity
from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.topics import Topics
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_approval.flows import Catalog, format_duration
from lapse_approval.models import ApprovalCase, CaseStatus, GrantExtension
from lapse_approval.operations.check_request import Refusal, RequestRefused


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
) -> tuple[timedelta, int, int]:
    """Returns (added, this extension's number, extensions left)."""
    case = await session.get(ApprovalCase, request_id, with_for_update=True)
    if case is None or case.requester != identity.subject:
        raise RequestRefused(Refusal.NOT_FOUND, f"no request {request_id!r} of yours")
    if case.status != CaseStatus.APPROVED or case.withdrawn:
        raise RequestRefused(
            Refusal.INVALID, f"request {request_id} is not an active approval ({case.status})"
        )
    flow = next((f for f in catalog.flows if f.name == case.flow), None)
    if flow is None:
        raise RequestRefused(Refusal.NOT_ALLOWED, f"flow {case.flow!r} no longer exists")
    if flow.max_extensions == 0:
        raise RequestRefused(Refusal.NOT_ALLOWED, f"flow {flow.name!r} allows no extensions")
    used = int(
        await session.scalar(
            select(func.count())
            .select_from(GrantExtension)
            .where(GrantExtension.grant_id == grant_id)
        )
        or 0
    )
    if used >= flow.max_extensions:
        raise RequestRefused(
            Refusal.NOT_ALLOWED,
            f"flow {flow.name!r} allows {flow.max_extensions} extension(s) and grant "
            f"{grant_id} has had {used}",
        )
    added = extend_by or flow.extension_duration
    if added > flow.extension_duration:
        raise RequestRefused(
            Refusal.INVALID,
            f"an extension adds at most {format_duration(flow.extension_duration)} "
            f"under flow {flow.name!r}",
        )
    session.add(
        GrantExtension(
            request_id=request_id,
            grant_id=grant_id,
            extend_by_seconds=int(added.total_seconds()),
            approved_at=clock.now(),
        )
    )
    enqueue(
        session,
        topic=topics.decisions,
        key=request_id,
        payload=events_pb2.ExtensionApproved(
            request_id=request_id,
            grant_id=grant_id,
            extend_by_seconds=int(added.total_seconds()),
            approved_by=f"flow {flow.name}",
            extension_number=used + 1,
        ),
        producer="approval",
        clock=clock,
        request_id=request_id,
        grant_id=grant_id,
    )
    return added, used + 1, flow.max_extensions - used - 1
