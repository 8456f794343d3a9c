"""Tell the requester that a grant ends soon (GrantExpiringSoon), once per expiry, so they can
extend it or wrap up. The reminder is a durable timer next to the expiry's (remind_at), so a
restarted scheduler still sends the reminders that fell due while it was down."""

from __future__ import annotations

from datetime import datetime, timedelta

from lapse_common.clock import Clock, as_utc
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.telemetry import continued_trace
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.due_grants import claim_due
from lapse_grant_scheduler.grant_facts import spec_of
from lapse_grant_scheduler.models import Grant


def arm_reminder(grant: Grant, *, now: datetime, notice: timedelta) -> None:
    """Set the reminder for the grant's current expiry. A short remaining lifetime is
    reminded after three quarters of it rather than `notice` ahead, which could be the
    moment the access starts and would tell the requester nothing useful."""
    grant.remind_at = None
    if notice <= timedelta(0) or grant.expires_at is None:
        return
    expires_at = as_utc(grant.expires_at)
    remaining = expires_at - now
    if remaining <= timedelta(0):
        return
    grant.remind_at = expires_at - min(notice, remaining / 4)


async def send_due_reminders(
    *, session: AsyncSession, topics: Topics, clock: Clock, batch_size: int
) -> int:
    """Claim the reminders that are due and publish them; returns how many were claimed."""
    now = clock.now()
    due = await claim_due(session, timer=Grant.remind_at, now=now, batch_size=batch_size)
    for grant in due:
        grant.remind_at = None
        if grant.expires_at is None or as_utc(grant.expires_at) <= now:
            continue  # already due for revocation: "ends soon" would arrive after the fact
        reminder = events_pb2.GrantExpiringSoon(
            grant_id=grant.grant_id,
            request_id=grant.request_id,
            requester=grant.requester,
            spec=spec_of(grant),
            epoch=grant.epoch,
        )
        reminder.expires_at.FromDatetime(as_utc(grant.expires_at))
        with continued_trace(grant.trace_context):
            enqueue(
                session,
                topic=topics.grants,
                key=grant.grant_id,
                payload=reminder,
                producer="grant-scheduler",
                clock=clock,
                request_id=grant.request_id,
                grant_id=grant.grant_id,
            )
    return len(due)
