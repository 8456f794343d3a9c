"""End every active grant in a scope at once: scoped revoke, the panic button, offboarding
and incidents all start a run here. Everything is written in one transaction (revoke asks,
canceled requests, the lockdown, the audited RevocationRunStarted), so a crash leaves either
the whole run or none of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from lapse_common.clock import Clock
from lapse_common.messaging.outbox import enqueue
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.refusals import Refusal, Refused
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.access_scope import (
    Reach,
    check_scope_shape,
    load_in_scope,
    load_pending_in_scope,
)
from lapse_request.operations.cancel_request import withdraw_request
from lapse_request.operations.preview_revocation import fingerprint_of
from lapse_request.operations.set_lockdown import set_lockdown
from lapse_request.revocation_request import request_revocation


@dataclass
class RunStarted:
    run_id: str
    grant_ids: list[str] = field(default_factory=list)
    pending_canceled: int = 0
    lockdown_id: str = ""


async def revoke_scope(
    *,
    session: AsyncSession,
    actor: str,
    scope: common_pb2.AccessScope,
    reach: Reach,
    reason: common_pb2.Reason.ValueType,
    detail: str,
    topics: Topics,
    clock: Clock,
    end_sessions: bool = False,
    cancel_pending: bool = False,
    lockdown: bool = False,
    incident_id: str = "",
    expected_fingerprint: str = "",
) -> RunStarted:
    check_scope_shape(scope, reach=reach)
    in_scope = await load_in_scope(session, scope, reach)
    grants = [grant for grant, _ in in_scope]
    if expected_fingerprint and expected_fingerprint != fingerprint_of(
        [g.grant_id for g in grants]
    ):
        raise Refused(
            Refusal.CONFLICT,
            f"the access in this scope changed since the preview ({len(grants)} grant(s) now): "
            "preview again before confirming",
        )
    run = RunStarted(run_id=f"run-{uuid.uuid4().hex[:16]}")
    why = f"{actor}: {detail}" if detail else actor
    for grant in grants:
        request_revocation(
            session,
            grant=grant,
            reason=reason,
            actor=why,
            topics=topics,
            clock=clock,
            end_sessions=end_sessions,
            run_id=run.run_id,
        )
        run.grant_ids.append(grant.grant_id)
    if cancel_pending:
        for row in await load_pending_in_scope(session, scope, reach):
            withdraw_request(
                session, row=row, canceled_by=actor, reason=detail, topics=topics, clock=clock
            )
            run.pending_canceled += 1
    if lockdown:
        locked = await set_lockdown(
            session=session,
            actor=actor,
            scope=scope,
            reason=detail,
            topics=topics,
            clock=clock,
            incident_id=incident_id,
        )
        run.lockdown_id = locked.lockdown_id
    enqueue(
        session,
        topic=topics.end_requests,
        key=run.run_id,
        payload=events_pb2.RevocationRunStarted(
            run_id=run.run_id,
            scope=scope,
            reason=reason,
            actor=actor,
            detail=detail,
            grants=len(run.grant_ids),
            pending_requests_canceled=run.pending_canceled,
            end_sessions=end_sessions,
            lockdown_id=run.lockdown_id,
        ),
        producer="request",
        clock=clock,
    )
    return run
