"""Overlapping grants must not cut each other off: the grant that keeps an access in the
target when another grant of the same access to the same principal ends."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from lapse_common.clock import as_utc
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.models import Grant, GrantState

# Who holds what where, in the order of the index on it (ix_grants_access).
AccessKey = tuple[str, str, str, str]


def access_of(grant: Grant) -> AccessKey:
    return (grant.principal, grant.integration_id, grant.resource, grant.permission)


async def covering_grant(
    session: AsyncSession, *, grant: Grant, excluded: Collection[str] = ()
) -> Grant | None:
    """The longest-lasting other ACTIVE grant of the same access to the same principal
    (none of `excluded`, which end together with this one)."""
    covering = await covering_grants(session, grants=[grant], excluded={grant.grant_id, *excluded})
    return covering.get(access_of(grant))


async def covering_grants(
    session: AsyncSession, *, grants: Sequence[Grant], excluded: Collection[str]
) -> dict[AccessKey, Grant]:
    """For each access `grants` hold, the longest-lasting ACTIVE grant of it that is none of
    `excluded`, in one query for all of them (a batch of expiries asks for hundreds)."""
    accesses = {access_of(grant) for grant in grants}
    if not accesses:
        return {}
    query = select(Grant).where(
        Grant.status == GrantState.ACTIVE,
        tuple_(Grant.principal, Grant.integration_id, Grant.resource, Grant.permission).in_(
            sorted(accesses)
        ),
        Grant.grant_id.not_in(list(excluded)),
    )
    longest: dict[AccessKey, Grant] = {}
    for other in (await session.execute(query)).scalars():
        key = access_of(other)
        held = longest.get(key)
        if held is None or _ends(other) > _ends(held):
            longest[key] = other
    return longest


_NO_EXPIRY = datetime.min.replace(tzinfo=UTC)


def _ends(grant: Grant) -> datetime:
    return _NO_EXPIRY if grant.expires_at is None else as_utc(grant.expires_at)
