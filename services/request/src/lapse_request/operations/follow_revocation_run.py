"""How far a scoped revocation has got, read from the Activity view the revoker's facts
update: sent (REVOKING), confirmed (REVOKED, verified by the agent), failed (retries
exhausted or canceled: the stuck-revocation tooling owns them now)."""

from __future__ import annotations

from datetime import timedelta

from lapse_common.clock import Clock
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lapse_request.agent_presence import count_per_agent, online_agents
from lapse_request.models import GrantActivity

_SENT = {
    common_pb2.GRANT_STATUS_REVOKING,
    common_pb2.GRANT_STATUS_REVOKED,
    common_pb2.GRANT_STATUS_REVOKE_CANCELED,
}


def _failed(grant: GrantActivity) -> bool:
    return grant.status == common_pb2.GRANT_STATUS_REVOKE_CANCELED or (
        grant.status == common_pb2.GRANT_STATUS_REVOKING and grant.stuck
    )


async def revocation_run_progress(
    *, session: AsyncSession, run_id: str, clock: Clock, offline_after: timedelta
) -> tuple[request_service_pb2.RevocationRunProgress, list[str]]:
    """The run's counts, and the ids of its grants not confirmed yet."""
    grants = list(
        (await session.execute(select(GrantActivity).where(GrantActivity.run_id == run_id)))
        .scalars()
        .all()
    )
    confirmed = sum(g.status == common_pb2.GRANT_STATUS_REVOKED for g in grants)
    failed = sum(_failed(g) for g in grants)
    unconfirmed = [g for g in grants if g.status != common_pb2.GRANT_STATUS_REVOKED]
    online = await online_agents(session, clock=clock, offline_after=offline_after)
    progress = request_service_pb2.RevocationRunProgress(
        run_id=run_id,
        grants=len(grants),
        sent=sum(g.status in _SENT for g in grants),
        confirmed=confirmed,
        failed=failed,
        unconfirmed_per_agent=count_per_agent(unconfirmed, online),
        done=confirmed + failed == len(grants),
    )
    return progress, [g.grant_id for g in unconfirmed]


def final_report(
    progress: request_service_pb2.RevocationRunProgress, unconfirmed: list[str]
) -> request_service_pb2.RevocationRunProgress:
    """The last message of a run: what is not confirmed and where to take it from here."""
    final = request_service_pb2.RevocationRunProgress()
    final.CopyFrom(progress)
    final.unconfirmed_grant_ids.extend(unconfirmed)
    if not unconfirmed:
        final.summary = f"all {progress.grants} grant(s) revoked and confirmed by their agents"
        return final
    offline = [a.agent_id for a in progress.unconfirmed_per_agent if not a.online]
    final.summary = (
        f"{progress.confirmed} of {progress.grants} confirmed; {len(unconfirmed)} not confirmed"
        + (f" (agents offline: {', '.join(offline)})" if offline else "")
        + ". The revoker keeps retrying them; once retries run out they are listed by "
        "`lapse revocations stuck` (replay or cancel there). Nothing unconfirmed is reported "
        "as revoked."
    )
    return final
