"""The one unit of work of a gRPC method that changes state: a session and its transaction
around the operation, the commit, then a wake for the outbox relay so the events the change
caused go out at once. A `Refused` raised inside rolls everything back (nothing half-written)
and ends the call with the status code for its kind, from the one map every service uses.

Read-only methods have nothing to commit or relay and open a plain session instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import NoReturn

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.refusals import Refusal, Refused

REFUSAL_STATUS: Mapping[Refusal, grpc.StatusCode] = {
    Refusal.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Refusal.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Refusal.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    Refusal.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Refusal.EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def abort_refused(context: grpc.aio.ServicerContext, refusal: Refused) -> NoReturn:
    """End the call with the refusal's status and message: for checks made before any
    database work, which need no transaction to roll back."""
    await context.abort(REFUSAL_STATUS[refusal.kind], refusal.message)
    # abort() raises; were a context ever to return, the method must still not go on.
    raise refusal


class UnitOfWork:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, relay: OutboxRelay | None
    ) -> None:
        self._sessions = sessions
        self._relay = relay

    @asynccontextmanager
    async def __call__(self, context: grpc.aio.ServicerContext) -> AsyncIterator[AsyncSession]:
        """`async with work(context) as session:` around one operation call."""
        try:
            async with self.transaction() as session:
                yield session
        except Refused as refusal:
            await abort_refused(context, refusal)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The same, except that a `Refused` propagates (after the rollback) instead of
        ending the call: for a method that reports each item's refusal itself and goes on."""
        async with self._sessions() as session, session.begin():
            yield session
        # Only after the commit: woken earlier, the relay could look before the rows exist.
        if self._relay is not None:
            self._relay.wake()
