"""Claim grants whose lifetime has ended and ask the revoker to take the access away."""

from __future__ import annotations

from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import common_pb2
from lapse_common.topics import Topics
from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.due_grants import claim_due
from lapse_grant_scheduler.grant_facts import request_revocation
from lapse_grant_scheduler.models import Grant
from lapse_grant_scheduler.overlapping_grants import access_of, covering_grants

_meter = metrics.get_meter("lapse.grant_scheduler")
_expiry_lateness = _meter.create_histogram(
    "lapse.expiry.claim_lateness", unit="s", description="claim time minus expires_at"
)


async def request_due_revocations(
    *, session: AsyncSession, topics: Topics, clock: Clock, batch_size: int
) -> int:
    now = clock.now()
    due = await claim_due(session, timer=Grant.expires_at, now=now, batch_size=batch_size)
    # Grants that end together do not cover each other.
    covering = await covering_grants(
        session, grants=due, excluded={grant.grant_id for grant in due}
    )
    for grant in due:
        assert grant.expires_at is not None
        request_revocation(
            session,
            grant=grant,
            reason=common_pb2.REASON_EXPIRED,
            actor="lapse-grant-scheduler",
            due_at=grant.expires_at,
            topics=topics,
            clock=clock,
            covering=covering.get(access_of(grant)),
        )
        _expiry_lateness.record((now - as_utc(grant.expires_at)).total_seconds())
    return len(due)
