"""Which access a scoped operation (revoke, panic, lockdown) reaches, and who may use which
scope. The server decides both: a client cannot widen its reach by what it sends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lapse_common.auth import ADMIN_ROLE, Identity
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.refusals import Refusal, Refused
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.items import unpack_items
from lapse_request.models import AccessRequest, GrantActivity

_FILTERS = ("integration_id", "resource", "permission", "user", "group", "flow")


def wrap_list(values: Sequence[str]) -> str:
    """',a,b,': one member matches with LIKE '%,a,%' and no member is a prefix of another."""
    return "," + "".join(f"{value}," for value in values)


@dataclass(frozen=True)
class Reach:
    """What the caller may end: everything (admin), what they approved, or their own."""

    approved_by: str | None = None
    owner: str | None = None


def describe_scope(scope: common_pb2.AccessScope) -> str:
    if scope.everything:
        return "all access"
    return ", ".join(f"{name}={getattr(scope, name)}" for name in _FILTERS if getattr(scope, name))


def check_scope_shape(scope: common_pb2.AccessScope, *, reach: Reach | None = None) -> None:
    """An empty scope is refused (INVALID) unless the reach already confines it (the
    caller's own access, or what they approved): "everything" must never be implied."""
    named = [name for name in _FILTERS if getattr(scope, name)]
    if reach is not None and (reach.owner or reach.approved_by) and not scope.everything:
        return
    if scope.everything and named:
        raise Refused(
            Refusal.INVALID,
            f"scope sets everything and also {', '.join(named)}: choose one (everything "
            "means all access)",
        )
    if not scope.everything and not named:
        raise Refused(
            Refusal.INVALID,
            "the scope names nothing: set integration, resource, permission, user, group or "
            "flow, or everything explicitly",
        )


def authorize_scope(
    identity: Identity,
    scope: common_pb2.AccessScope,
    *,
    approved_by_me: bool,
    admin_only: str = "",
) -> Reach:
    """Refused (FORBIDDEN) when the scope reaches beyond the caller's rights."""
    is_admin = identity.has_role(ADMIN_ROLE)
    if admin_only and not is_admin:
        raise Refused(Refusal.FORBIDDEN, f"{admin_only} needs the admin role")
    if approved_by_me:
        return Reach(approved_by=identity.subject)
    if is_admin:
        return Reach()
    if scope.everything or (scope.user and scope.user != identity.subject):
        raise Refused(
            Refusal.FORBIDDEN,
            f"{identity.subject} may revoke only their own access (user={identity.subject}) or "
            "what they approved (approved_by_me); anything wider needs the admin role",
        )
    return Reach(owner=identity.subject)


def grants_in_scope(
    scope: common_pb2.AccessScope, reach: Reach
) -> Select[GrantActivity, AccessRequest]:
    """ACTIVE grants in the scope that no one has asked to revoke yet."""
    query = (
        select(GrantActivity, AccessRequest)
        .join(AccessRequest, AccessRequest.request_id == GrantActivity.request_id)
        .where(
            GrantActivity.status == common_pb2.GRANT_STATUS_ACTIVE,
            GrantActivity.revoke_requested_at.is_(None),
        )
    )
    user = reach.owner or scope.user
    if user:
        query = query.where(GrantActivity.requester == user)
    if reach.approved_by:
        query = query.where(AccessRequest.approvers.contains(f",{reach.approved_by},"))
    for column, value in (
        (GrantActivity.integration_id, scope.integration_id),
        (GrantActivity.resource, scope.resource),
        (GrantActivity.permission, scope.permission),
        (AccessRequest.flow, scope.flow),
    ):
        if value:
            query = query.where(column == value)
    if scope.group:
        query = query.where(AccessRequest.requester_groups.contains(f",{scope.group},"))
    return query.order_by(GrantActivity.agent_id, GrantActivity.grant_id)


def pending_requests_in_scope(scope: common_pb2.AccessScope, reach: Reach) -> Select[AccessRequest]:
    query = select(AccessRequest).where(
        AccessRequest.status == common_pb2.REQUEST_STATUS_PENDING_APPROVAL
    )
    user = reach.owner or scope.user
    if user:
        query = query.where(AccessRequest.requester == user)
    if scope.flow:
        query = query.where(AccessRequest.flow == scope.flow)
    if scope.group:
        query = query.where(AccessRequest.requester_groups.contains(f",{scope.group},"))
    return query.order_by(AccessRequest.created_at)


def request_in_scope(
    scope: common_pb2.AccessScope,
    *,
    requester: str,
    groups: Sequence[str],
    flow: str,
    item: common_pb2.GrantSpec,
) -> bool:
    """Whether a would-be request falls in the scope (lockdowns)."""
    if scope.everything:
        return True
    return all(
        (
            not scope.integration_id or scope.integration_id == item.integration_id,
            not scope.resource or scope.resource == item.resource,
            not scope.permission or scope.permission == item.permission,
            not scope.user or scope.user == requester,
            not scope.group or scope.group in groups,
            not scope.flow or scope.flow == flow,
        )
    )


async def load_in_scope(
    session: AsyncSession, scope: common_pb2.AccessScope, reach: Reach
) -> list[tuple[GrantActivity, AccessRequest]]:
    rows = await session.execute(grants_in_scope(scope, reach))
    return [(grant, request) for grant, request in rows.tuples()]


async def load_pending_in_scope(
    session: AsyncSession, scope: common_pb2.AccessScope, reach: Reach
) -> list[AccessRequest]:
    """Pending requests in the scope (items are matched here: they are stored packed)."""
    rows = (await session.execute(pending_requests_in_scope(scope, reach))).scalars().all()
    return [
        row
        for row in rows
        if any(
            request_in_scope(
                scope,
                requester=row.requester,
                groups=row.requester_groups.strip(",").split(","),
                flow=row.flow,
                item=item,
            )
            for item in unpack_items(row.items_blob)
        )
    ]
