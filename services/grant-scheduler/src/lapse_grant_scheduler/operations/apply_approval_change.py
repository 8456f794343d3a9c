"""An approval changed after the grants went out: withdrawn by a policy change (revoke now),
shortened by one (move the expiry earlier), or extended by the flow (move it later)."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_common.topics import Topics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_grant_scheduler.grant_facts import enqueue_grant_fact, request_revocation
from lapse_grant_scheduler.models import Grant, GrantState
from lapse_grant_scheduler.operations.remind_expiring_grants import arm_reminder


async def _grants(session: AsyncSession, request_id: str) -> list[Grant]:
    query = select(Grant).where(Grant.request_id == request_id).with_for_update()
    return list((await session.execute(query)).scalars().all())


async def withdraw_approval(
    *, session: AsyncSession, withdrawn: events_pb2.ApprovalWithdrawn, topics: Topics, clock: Clock
) -> bool:
    changed = False
    for grant in await _grants(session, withdrawn.request_id):
        if grant.status == GrantState.GRANTING:
            # Revoked the moment the agent confirms it: its lifetime is now zero.
            grant.duration_seconds = 0
            changed = True
        elif grant.status == GrantState.ACTIVE:
            request_revocation(
                session,
                grant=grant,
                reason=common_pb2.REASON_POLICY_CHANGE,
                actor=withdrawn.withdrawn_by,
                due_at=clock.now(),
                topics=topics,
                clock=clock,
            )
    return changed


async def shorten_approval(
    *,
    session: AsyncSession,
    shortened: events_pb2.ApprovalShortened,
    topics: Topics,
    clock: Clock,
    expiry_notice: timedelta,
) -> bool:
    limit = timedelta(seconds=shortened.max_duration_seconds)
    changed = False
    for grant in await _grants(session, shortened.request_id):
        if grant.status == GrantState.GRANTING:
            grant.duration_seconds = min(grant.duration_seconds, shortened.max_duration_seconds)
        elif grant.status == GrantState.ACTIVE and grant.granted_at and grant.expires_at:
            latest = as_utc(grant.granted_at) + limit
            if latest < as_utc(grant.expires_at):
                grant.expires_at = latest
                grant.epoch += 1
                arm_reminder(grant, now=clock.now(), notice=expiry_notice)
                changed = True
                enqueue_grant_fact(
                    session,
                    grant=grant,
                    status=common_pb2.GRANT_STATUS_ACTIVE,
                    reason=common_pb2.REASON_POLICY_CHANGE,
                    actor="lapse-approval",
                    detail=f"shortened: {shortened.detail}",
                    topics=topics,
                    clock=clock,
                )
    return changed


async def extend_active_grant(
    *,
    session: AsyncSession,
    extension: events_pb2.ExtensionApproved,
    topics: Topics,
    clock: Clock,
    expiry_notice: timedelta,
) -> bool:
    grant = await session.get(Grant, extension.grant_id, with_for_update=True)
    if grant is None or grant.request_id != extension.request_id:
        return False
    if grant.status != GrantState.ACTIVE or grant.expires_at is None:
        return False
    grant.expires_at = as_utc(grant.expires_at) + timedelta(seconds=extension.extend_by_seconds)
    grant.epoch += 1
    # Re-armed even if this expiry's reminder was already sent: the new expiry gets its own.
    arm_reminder(grant, now=clock.now(), notice=expiry_notice)
    enqueue_grant_fact(
        session,
        grant=grant,
        status=common_pb2.GRANT_STATUS_ACTIVE,
        reason=common_pb2.REASON_USER,
        actor=extension.approved_by,
        detail=f"extension {extension.extension_number}: +{extension.extend_by_seconds}s",
        topics=topics,
        clock=clock,
    )
    return True
