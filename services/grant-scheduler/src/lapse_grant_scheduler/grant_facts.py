"""Publishing grant lifecycle facts (lapse.grants.v1) from the scheduler's grant rows."""

from __future__ import annotations

from datetime import datetime

from lapse_common.clock import Clock, as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.telemetry import continued_trace
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.models import Grant, GrantState


def spec_of(grant: Grant) -> common_pb2.GrantSpec:
    return grant_spec_of(grant)


def enqueue_grant_fact(
    session: AsyncSession,
    *,
    grant: Grant,
    status: common_pb2.GrantStatus.ValueType,
    reason: common_pb2.Reason.ValueType,
    actor: str,
    detail: str,
    topics: Topics,
    clock: Clock,
) -> None:
    fact = events_pb2.GrantStatusChanged(
        grant_id=grant.grant_id,
        request_id=grant.request_id,
        status=status,
        epoch=grant.epoch,
        spec=spec_of(grant),
        requester=grant.requester,
        reason=reason,
        actor=actor,
        detail=detail,
    )
    if grant.granted_at is not None:
        fact.granted_at.FromDatetime(as_utc(grant.granted_at))
    if grant.expires_at is not None:
        fact.expires_at.FromDatetime(as_utc(grant.expires_at))
    enqueue(
        session,
        topic=topics.grants,
        key=grant.grant_id,
        payload=fact,
        producer="grant-scheduler",
        clock=clock,
        request_id=grant.request_id,
        grant_id=grant.grant_id,
    )


def request_revocation(
    session: AsyncSession,
    *,
    grant: Grant,
    reason: common_pb2.Reason.ValueType,
    actor: str,
    due_at: datetime,
    topics: Topics,
    clock: Clock,
    covering: Grant | None = None,
    end_sessions: bool = False,
    run_id: str = "",
    new_epoch: bool = True,
) -> None:
    """Hand the grant to the revoker: mark it, bump its epoch, publish the revoke request
    (within the grant's own trace). Only the scheduler writes revoke requests, so the
    revoker can take the epoch and the covering grant as the scheduler's decision.

    Without `new_epoch` the request repeats the epoch the revoker already has: it adds to
    the revocation running (ending sessions) instead of starting another."""
    grant.status = GrantState.REVOKE_REQUESTED
    if new_epoch:
        grant.epoch += 1
    grant.revoke_requested_at = clock.now()
    revoke = events_pb2.RevokeRequested(
        grant_id=grant.grant_id,
        request_id=grant.request_id,
        epoch=grant.epoch,
        spec=spec_of(grant),
        reason=reason,
        actor=actor,
        requester=grant.requester,
        end_sessions=end_sessions,
        run_id=run_id,
    )
    revoke.due_at.FromDatetime(as_utc(due_at))
    if covering is not None and covering.expires_at is not None:
        revoke.covered_by_grant_id = covering.grant_id
        revoke.covered_until.FromDatetime(as_utc(covering.expires_at))
    with continued_trace(grant.trace_context):
        enqueue(
            session,
            topic=topics.revoke_requests,
            key=grant.grant_id,
            payload=revoke,
            producer="grant-scheduler",
            clock=clock,
            request_id=grant.request_id,
            grant_id=grant.grant_id,
        )
