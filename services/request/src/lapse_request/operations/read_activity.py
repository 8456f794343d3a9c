"""Read side of the Activity view: requests with their grants and grant history."""

from __future__ import annotations

from collections.abc import Sequence

from lapse_common.clock import as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.paging import PageRequest, time_key
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.items import unpack_items
from lapse_request.models import AccessRequest, GrantActivity, GrantTransition


async def list_requests(
    *, session: AsyncSession, requester: str | None, page: PageRequest
) -> tuple[Sequence[AccessRequest], str]:
    """Newest first, one page, and the token for the next ("" on the last)."""
    query = (
        select(AccessRequest)
        .order_by(AccessRequest.created_at.desc(), AccessRequest.request_id.desc())
        .limit(page.size + 1)
    )
    if requester is not None:
        query = query.where(AccessRequest.requester == requester)
    after = page.after_time()
    if after is not None:
        moment, request_id = after
        query = query.where(
            or_(
                AccessRequest.created_at < moment,
                and_(AccessRequest.created_at == moment, AccessRequest.request_id < request_id),
            )
        )
    rows = (await session.execute(query)).scalars().all()
    if len(rows) <= page.size:
        return rows, ""
    last = rows[page.size - 1]
    return rows[: page.size], page.next_token(time_key(as_utc(last.created_at), last.request_id))


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
    *, session: AsyncSession, requester: str | None, page: PageRequest
) -> tuple[list[request_service_pb2.UnverifiedAccess], str]:
    """Grants whose revocation an operator canceled: the access may still exist. Oldest
    first, one page, and the token for the next ("" on the last)."""
    query = (
        select(GrantActivity)
        .where(GrantActivity.status == common_pb2.GRANT_STATUS_REVOKE_CANCELED)
        .order_by(GrantActivity.updated_at, GrantActivity.grant_id)
        .limit(page.size + 1)
    )
    if requester is not None:
        query = query.where(GrantActivity.requester == requester)
    after = page.after_time()
    if after is not None:
        moment, grant_id = after
        query = query.where(
            or_(
                GrantActivity.updated_at > moment,
                and_(GrantActivity.updated_at == moment, GrantActivity.grant_id > grant_id),
            )
        )
    grants = (await session.execute(query)).scalars().all()
    next_token = ""
    if len(grants) > page.size:
        grants = grants[: page.size]
        last = grants[-1]
        next_token = page.next_token(time_key(as_utc(last.updated_at), last.grant_id))
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
    ], next_token
