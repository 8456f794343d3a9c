"""Refuse a new request that falls in a lockdown's scope, saying which lockdown and how it
ends."""

from __future__ import annotations

from collections.abc import Sequence

from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.refusals import Refusal, Refused
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import describe_scope, request_in_scope
from lapse_request.lockdown_rows import load_lockdowns, scope_of


async def check_lockdown(
    *,
    session: AsyncSession,
    requester: str,
    groups: Sequence[str],
    flow: str,
    item: common_pb2.GrantSpec,
) -> None:
    for row in await load_lockdowns(session):
        scope = scope_of(row)
        if request_in_scope(scope, requester=requester, groups=groups, flow=flow, item=item):
            why = f": {row.reason}" if row.reason else ""
            raise Refused(
                Refusal.CONFLICT,
                f"refused: lockdown {row.lockdown_id} ({describe_scope(scope)}) set by "
                f"{row.set_by} at {row.set_at:%Y-%m-%d %H:%M:%S} UTC{why}. No new access in "
                f"its scope until an admin lifts it (lapse lockdown lift {row.lockdown_id})",
            )
