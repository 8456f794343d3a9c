"""The current attempt of a revocation failed: retry it after a backoff, or dead-letter it
when that was its last attempt or the failure is permanent."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from lapse_revoker.models import Revocation
from lapse_revoker.operations.dead_letter_revocation import dead_letter_revocation
from lapse_revoker.revoker_context import RevokerContext


async def fail_revoke_attempt(
    *,
    session: AsyncSession,
    revocation: Revocation,
    error: str,
    permanent: bool,
    ctx: RevokerContext,
) -> None:
    """Either way the revocation no longer holds an in-flight slot of its agent; the caller
    fills the freed slot from the agent's queue."""
    if permanent or revocation.attempt >= ctx.policy.max_attempts:
        await dead_letter_revocation(session=session, revocation=revocation, error=error, ctx=ctx)
    else:
        revocation.back_off(
            error=error, now=ctx.clock.now(), delay=ctx.policy.backoff(revocation.attempt)
        )
