"""Read side for SRE tooling: stuck revocations, one revocation's history, agents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lapse_common.clock import as_utc
from lapse_common.grant_spec import grant_spec_of
from lapse_common.paging import PageRequest, time_key
from lapse_common.pb.lapse.v1 import revoker_service_pb2
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.attempt_history import attempts_of
from lapse_revoker.models import AgentPresence, Revocation, RevocationState, RevokeAttemptRecord


async def list_stuck(
    *,
    session: AsyncSession,
    agent_id: str,
    integration_id: str,
    older_than: datetime | None,
    page: PageRequest,
) -> tuple[Sequence[Revocation], str]:
    """Longest stuck first, one page, and the token for the next ("" on the last)."""
    query = (
        select(Revocation)
        .where(Revocation.state == RevocationState.DEAD_LETTERED)
        .order_by(Revocation.due_at, Revocation.grant_id)
        .limit(page.size + 1)
    )
    after = page.after_time()
    if after is not None:
        moment, grant_id = after
        query = query.where(
            or_(
                Revocation.due_at > moment,
                and_(Revocation.due_at == moment, Revocation.grant_id > grant_id),
            )
        )
    if agent_id:
        query = query.where(Revocation.agent_id == agent_id)
    if integration_id:
        query = query.where(Revocation.integration_id == integration_id)
    if older_than is not None:
        query = query.where(Revocation.due_at <= older_than)
    rows = (await session.execute(query)).scalars().all()
    if len(rows) <= page.size:
        return rows, ""
    last = rows[page.size - 1]
    return rows[: page.size], page.next_token(time_key(as_utc(last.due_at), last.grant_id))


async def render_revocation(
    *, session: AsyncSession, revocation: Revocation, with_attempts: bool
) -> revoker_service_pb2.RevocationView:
    view = revoker_service_pb2.RevocationView(
        grant_id=revocation.grant_id,
        request_id=revocation.request_id,
        requester=revocation.requester,
        spec=grant_spec_of(revocation),
        epoch=revocation.epoch,
        state=revocation.state,
        stuck=revocation.state == RevocationState.DEAD_LETTERED,
        attempt=revocation.attempt,
        reason=revocation.reason,  # type: ignore[arg-type]
        last_error=revocation.last_error,
        resolved_by=revocation.resolved_by,
        resolution_reason=revocation.resolution_reason,
    )
    view.due_at.FromDatetime(as_utc(revocation.due_at))
    if with_attempts:
        rows = (
            await session.execute(
                select(RevokeAttemptRecord).where(
                    RevokeAttemptRecord.grant_id == revocation.grant_id
                )
            )
        ).scalars()
        view.attempts.extend(attempts_of(list(rows)))
    return view


@dataclass(frozen=True)
class AgentStatus:
    agent_id: str
    last_seen_at: datetime | None
    in_flight: int
    queued: int
    stuck: int

    def heartbeat_age(self, now: datetime) -> timedelta | None:
        return None if self.last_seen_at is None else now - as_utc(self.last_seen_at)

    def online(self, now: datetime, offline_after: timedelta) -> bool:
        age = self.heartbeat_age(now)
        return age is not None and age <= offline_after


async def agent_statuses(*, session: AsyncSession) -> list[AgentStatus]:
    seen = {
        p.agent_id: p.last_seen_at for p in (await session.execute(select(AgentPresence))).scalars()
    }
    counts: dict[str, dict[str, int]] = {}
    rows = await session.execute(
        select(Revocation.agent_id, Revocation.state, func.count())
        .where(
            Revocation.state.in_(
                [
                    RevocationState.AWAITING_ACK,
                    RevocationState.QUEUED,
                    RevocationState.DEAD_LETTERED,
                ]
            )
        )
        .group_by(Revocation.agent_id, Revocation.state)
    )
    for agent_id, state, count in rows:
        counts.setdefault(agent_id, {})[state] = int(count)
    return [
        AgentStatus(
            agent_id=agent_id,
            last_seen_at=seen.get(agent_id),
            in_flight=counts.get(agent_id, {}).get(RevocationState.AWAITING_ACK, 0),
            queued=counts.get(agent_id, {}).get(RevocationState.QUEUED, 0),
            stuck=counts.get(agent_id, {}).get(RevocationState.DEAD_LETTERED, 0),
        )
        for agent_id in sorted(set(seen) | set(counts))
    ]
