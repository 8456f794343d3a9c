"""Lockdown rows: reading them, and to and from their protobuf view."""

from __future__ import annotations

from collections.abc import Sequence

from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import Lockdown


def scope_of(row: Lockdown) -> common_pb2.AccessScope:
    scope = common_pb2.AccessScope()
    scope.ParseFromString(bytes.fromhex(row.scope))
    return scope


def pack_scope(scope: common_pb2.AccessScope) -> str:
    return scope.SerializeToString(deterministic=True).hex()


def lockdown_view(row: Lockdown) -> request_service_pb2.Lockdown:
    view = request_service_pb2.Lockdown(
        lockdown_id=row.lockdown_id,
        scope=scope_of(row),
        set_by=row.set_by,
        reason=row.reason,
        lifted_by=row.lifted_by,
        incident_id=row.incident_id,
    )
    view.set_at.FromDatetime(as_utc(row.set_at))
    if row.lifted_at is not None:
        view.lifted_at.FromDatetime(as_utc(row.lifted_at))
    return view


async def load_lockdowns(
    session: AsyncSession, *, include_lifted: bool = False
) -> Sequence[Lockdown]:
    """Lockdowns in force (or all of them), oldest first."""
    query = select(Lockdown).order_by(Lockdown.set_at)
    if not include_lifted:
        query = query.where(Lockdown.lifted_at.is_(None))
    return (await session.execute(query)).scalars().all()
