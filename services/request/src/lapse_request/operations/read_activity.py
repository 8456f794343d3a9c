"""Read side of the Activity view: requests with their grants and grant history."""

from __future__ import annotations

from collections.abc import Sequence

from lapse_common.clock import as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.items import unpack_items
from lapse_request.models import AccessRequest, GrantActivity, GrantTransition


async def list_requests(
    *, session: AsyncSession, requester: str | None, limit: int
) -> Sequence[AccessRequest]:
    query = select(AccessRequest).order_by(AccessRequest.created_at.desc()).limit(limit)
    if requester is not None:
        query = query.where(AccessRequest.requester == requester)
    return (await session.execute(query)).scalars().all()


async def render_requests(
    *, session: AsyncSession, rows: Sequence[AccessRequest]
) -> list[request_service_pb2.AccessRequestView]:
    ids = [row.request_id for row in rows]
    grants = (
        (await session.execute(select(GrantActivity).where(GrantActivity.request_id.in_(ids))))
        .scalars()
        .all()
    )
    grant_ids = [g.grant_id for g in grants]
    transitions = (
        (
            await session.execute(
                select(GrantTransition)
                .where(GrantTransition.grant_id.in_(grant_ids))
                .order_by(GrantTransition.id)
            )
        )
        .scalars()
        .all()
    )
    views = []
    for row in rows:
        view = request_service_pb2.AccessRequestView(
            request_id=row.request_id,
            requester=row.requester,
            flow=row.flow,
            status=row.status,  # type: ignore[arg-type]
            justification=row.justification,
            duration_seconds=row.duration_seconds,
            decided_by=row.decided_by,
            decision_detail=row.decision_detail,
            items=unpack_items(row.items_blob),
        )
        view.created_at.FromDatetime(as_utc(row.created_at))
        view.updated_at.FromDatetime(as_utc(row.updated_at))
        for grant in (g for g in grants if g.request_id == row.request_id):
            view.grants.append(
                grant_view(grant, [t for t in transitions if t.grant_id == grant.grant_id])
            )
        views.append(view)
    return views


def grant_view(
    grant: GrantActivity, transitions: Sequence[GrantTransition]
) -> request_service_pb2.GrantView:
    view = request_service_pb2.GrantView(
        grant_id=grant.grant_id,
        spec=grant_spec_of(grant),
        status=grant.status,  # type: ignore[arg-type]
        stuck=grant.stuck,
        epoch=grant.epoch,
    )
    if grant.granted_at is not None:
        view.granted_at.FromDatetime(as_utc(grant.granted_at))
    if grant.expires_at is not None:
        view.expires_at.FromDatetime(as_utc(grant.expires_at))
    for transition in transitions:
        step = view.history.add(
            status=common_pb2.GrantStatus.Name(transition.status).removeprefix(  # type: ignore[arg-type]
                "GRANT_STATUS_"
            ),
            reason=transition.reason,
            actor=transition.actor,
            detail=transition.detail,
        )
        step.at.FromDatetime(as_utc(transition.at))
    return view


async def list_unverified_access(
    *, session: AsyncSession, requester: str | None
) -> list[request_service_pb2.UnverifiedAccess]:
    """Grants whose revocation an operator canceled: the access may still exist."""
    query = select(GrantActivity).where(
        GrantActivity.status == common_pb2.GRANT_STATUS_REVOKE_CANCELED
    )
    if requester is not None:
        query = query.where(GrantActivity.requester == requester)
    grants = (await session.execute(query.order_by(GrantActivity.updated_at))).scalars().all()
    transitions = (
        (
            await session.execute(
                select(GrantTransition)
                .where(GrantTransition.grant_id.in_([g.grant_id for g in grants]))
                .order_by(GrantTransition.id)
            )
        )
        .scalars()
        .all()
    )
    return [
        request_service_pb2.UnverifiedAccess(
            request_id=grant.request_id,
            requester=grant.requester,
            grant=grant_view(grant, [t for t in transitions if t.grant_id == grant.grant_id]),
        )
        for grant in grants
    ]
