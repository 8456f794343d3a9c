"""Asking the revoker to end one grant: the single step every early end (own revoke, an
approver's, scoped revoke, panic, offboarding, incident) goes through."""

from __future__ import annotations

from lapse_common.clock import Clock
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
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
) -> None:
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
