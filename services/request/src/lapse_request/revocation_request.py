"""Asking the grant-scheduler to end one grant: the single step every early end (own
revoke, an approver's, scoped revoke, panic, offboarding, incident) goes through.

The request service says which grant and why, nothing more. The scheduler owns grants: it
alone decides the new epoch and whether an overlapping grant keeps the access, and sends
the revoke request the revoker acts on."""

from __future__ import annotations

from lapse_common.clock import Clock
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
    grant.revoke_requested_at = clock.now()
    if run_id:
        grant.run_id = run_id
    enqueue(
        session,
        topic=topics.end_requests,
        key=grant.grant_id,
        payload=events_pb2.GrantEndRequested(
            grant_id=grant.grant_id,
            request_id=grant.request_id,
            reason=reason,
            actor=actor,
            end_sessions=end_sessions,
            run_id=run_id,
        ),
        producer="request",
        clock=clock,
        request_id=grant.request_id,
        grant_id=grant.grant_id,
    )
