"""Asking the revoker to end one grant: the single step every early end (own revoke, an
approver's, scoped revoke, panic, offboarding, incident) goes through."""

from __future__ import annotations

from collections.abc import Collection

from lapse_common.clock import Clock, as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.models import GrantActivity


def request_revocation(
    session: AsyncSession,
    *,
    grant: GrantActivity,
    reason: common_pb2.Reason.ValueType,
    actor: str,
    topics: Topics,
    clock: Clock,
    end_sessions: bool = False,
    run_id: str = "",
    covering: GrantActivity | None = None,
) -> None:
    """`covering`: another active grant of the same access to the same principal that is not
    ending now; the revoker then leaves the access in place for it (overlapping grants never
    cut each other off) and that grant's own end removes it."""
    now = clock.now()
    grant.revoke_requested_at = now
    if run_id:
        grant.run_id = run_id
    requested = events_pb2.RevokeRequested(
        grant_id=grant.grant_id,
        request_id=grant.request_id,
        # A newer epoch than any command so far: the scheduler stops its expiry timer and
        # the revoker takes it over.
        epoch=grant.epoch + 1,
        spec=grant_spec_of(grant),
        reason=reason,
        actor=actor,
        requester=grant.requester,
        end_sessions=end_sessions,
        run_id=run_id,
    )
    requested.due_at.FromDatetime(now)
    if covering is not None:
        requested.covered_by_grant_id = covering.grant_id
        if covering.expires_at is not None:
            requested.covered_until.FromDatetime(as_utc(covering.expires_at))
    enqueue(
        session,
        topic=topics.revoke_requests,
        key=grant.grant_id,
        payload=requested,
        producer="request",
        clock=clock,
        request_id=grant.request_id,
        grant_id=grant.grant_id,
    )


async def covering_grants(
    session: AsyncSession, *, ending: Collection[GrantActivity]
) -> dict[str, GrantActivity]:
    """For each ending grant, the longest-lasting other ACTIVE grant giving the same principal
    the same permission on the same resource that is not ending too (one query for a whole
    run)."""
    ending_ids = {grant.grant_id for grant in ending}
    principals = {grant.principal for grant in ending}
    if not principals:
        return {}
    candidates = (
        (
            await session.execute(
                select(GrantActivity)
                .where(
                    GrantActivity.status == common_pb2.GRANT_STATUS_ACTIVE,
                    GrantActivity.revoke_requested_at.is_(None),
                    GrantActivity.principal.in_(principals),
                )
                .order_by(GrantActivity.expires_at)
            )
        )
        .scalars()
        .all()
    )
    # Ordered by expiry, so the last one written per access is the longest-lasting.
    longest = {
        _access(candidate): candidate
        for candidate in candidates
        if candidate.grant_id not in ending_ids
    }
    return {
        grant.grant_id: longest[_access(grant)] for grant in ending if _access(grant) in longest
    }


def _access(grant: GrantActivity) -> tuple[str, str, str, str]:
    return (grant.principal, grant.integration_id, grant.resource, grant.permission)
