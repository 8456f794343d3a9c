"""The request service asked to end a grant before its expiry (its requester, an approver,
an admin, a scoped revocation, panic, offboarding): the scheduler decides the new epoch and
whether an overlapping grant keeps the access, stops the expiry timer, and hands the grant
to the revoker. Nobody else decides either."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.grant_facts import request_revocation
from lapse_grant_scheduler.models import Grant, GrantState

# Not yet ended: its access exists, or may still come to exist in the target.
_LIVE = (GrantState.GRANTING, GrantState.ACTIVE)


async def end_grant_early(
    *, session: AsyncSession, requested: events_pb2.GrantEndRequested, topics: Topics, clock: Clock
) -> None:
    ending = await session.get(Grant, requested.grant_id)
    if ending is None:
        raise RefusedMessage(f"end request for grant {requested.grant_id!r}: no such grant")
    # Every grant of the same access, locked in one order: two ends of overlapping grants
    # handled at once (replicas) then see each other's decision instead of both deciding
    # that the other keeps the access.
    same_access = (
        (
            await session.execute(
                select(Grant)
                .where(
                    Grant.principal == ending.principal,
                    Grant.integration_id == ending.integration_id,
                    Grant.resource == ending.resource,
                    Grant.permission == ending.permission,
                )
                .order_by(Grant.grant_id)
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    grant = next(g for g in same_access if g.grant_id == requested.grant_id)
    already_ending = grant.status == GrantState.REVOKE_REQUESTED
    if already_ending and not requested.end_sessions:
        return  # it expired, or another end came first: the revoker has it already
    if not already_ending and grant.status not in _LIVE:
        return  # it never became access (GRANT_FAILED): nothing to take away
    covering = None
    if not already_ending:
        covering = max(
            (
                other
                for other in same_access
                if other.grant_id != grant.grant_id
                and other.status == GrantState.ACTIVE
                and other.expires_at is not None
            ),
            key=lambda other: other.expires_at or clock.now(),
            default=None,
        )
    request_revocation(
        session,
        grant=grant,
        reason=requested.reason,
        actor=requested.actor,
        due_at=clock.now(),
        topics=topics,
        clock=clock,
        covering=covering,
        end_sessions=requested.end_sessions,
        run_id=requested.run_id,
        # Already being revoked: the revoker still has to end the principal's sessions, at
        # the epoch it has, rather than start over.
        new_epoch=not already_ending,
    )
