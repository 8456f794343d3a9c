"""The grant lifecycle facts the revoker publishes on the grants topic."""

from __future__ import annotations

from lapse_common.grant_spec import grant_spec_of
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation
from lapse_revoker.revoker_context import RevokerContext


def enqueue_grant_fact(
    session: AsyncSession,
    *,
    revocation: Revocation,
    status: common_pb2.GrantStatus.ValueType,
    detail: str,
    ctx: RevokerContext,
    stuck: bool = False,
    actor: str | None = None,
) -> None:
    enqueue(
        session,
        topic=ctx.topics.grants,
        key=revocation.grant_id,
        payload=events_pb2.GrantStatusChanged(
            grant_id=revocation.grant_id,
            request_id=revocation.request_id,
            status=status,
            epoch=revocation.epoch,
            spec=grant_spec_of(revocation),
            requester=revocation.requester,
            reason=revocation.reason,  # type: ignore[arg-type]
            actor=actor if actor is not None else revocation.actor,
            detail=detail,
            stuck=stuck,
        ),
        producer="revoker",
        clock=ctx.clock,
        request_id=revocation.request_id,
        grant_id=revocation.grant_id,
    )
