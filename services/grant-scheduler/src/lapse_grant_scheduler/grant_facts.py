"""Publishing grant lifecycle facts (lapse.grants.v1) from the scheduler's grant rows."""

from __future__ import annotations

from lapse_common.clock import Clock, as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.models import Grant


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
