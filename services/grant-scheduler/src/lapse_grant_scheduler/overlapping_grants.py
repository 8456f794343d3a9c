"""Overlapping grants must not cut each other off: the grant that keeps an access in the
target when another grant of the same access to the same principal ends."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.models import Grant, GrantState


async def covering_grant(
    session: AsyncSession, *, grant: Grant, excluded: Collection[str] = ()
) -> Grant | None:
    """The longest-lasting other ACTIVE grant of the same access to the same principal
    (none of `excluded`, which end together with this one)."""
    query = (
        select(Grant)
        .where(
            Grant.status == GrantState.ACTIVE,
            Grant.integration_id == grant.integration_id,
            Grant.resource == grant.resource,
            Grant.permission == grant.permission,
            Grant.principal == grant.principal,
            Grant.grant_id.not_in([grant.grant_id, *excluded]),
        )
        .order_by(Grant.expires_at.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalars().first()
