"""RevokerService gRPC: SRE tooling for stuck revocations and agent liveness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import grpc
from lapse_common.auth import ADMIN_ROLE, AUDITOR_ROLE, SRE_ROLE, current_identity
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.paging import PageRequest, page_of, page_request_or_abort
from lapse_common.pb.lapse.v1 import revoker_service_pb2, revoker_service_pb2_grpc
from lapse_common.refusals import Refused
from lapse_common.unit_of_work import UnitOfWork
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_revoker.models import EnrolledAgent, Revocation, RevocationState
from lapse_revoker.operations.disable_agent import disable_agent
from lapse_revoker.operations.read_revocations import agent_statuses, list_stuck, render_revocation
from lapse_revoker.operations.register_agent_key import register_agent_key
from lapse_revoker.operations.resolve_stuck_revocation import (
    CANCEL_WARNING,
    cancel_stuck_revocation,
    replay_stuck_revocation,
)
from lapse_revoker.revoker_context import RevokerContext

READERS = (SRE_ROLE, ADMIN_ROLE, AUDITOR_ROLE)
OPERATORS = (SRE_ROLE, ADMIN_ROLE)
Resolve = Callable[..., Awaitable[str]]


async def _require(context: grpc.aio.ServicerContext, roles: tuple[str, ...], action: str) -> str:
    identity = current_identity()
    if not any(identity.has_role(role) for role in roles):
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{action} needs one of the roles {', '.join(roles)}; {identity.subject} has "
            f"{', '.join(identity.roles) or 'none'}",
        )
    return identity.subject


class RevokerApi(revoker_service_pb2_grpc.RevokerServiceServicer):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        ctx: RevokerContext,
        offline_after: timedelta,
    ) -> None:
        self._sessions = sessions
        self._work = UnitOfWork(sessions, relay=relay)
        self._ctx = ctx
        self._offline_after = offline_after

    def register(self, server: grpc.aio.Server) -> None:
        revoker_service_pb2_grpc.add_RevokerServiceServicer_to_server(self, server)

    async def ListStuckRevocations(
        self,
        request: revoker_service_pb2.ListStuckRevocationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> revoker_service_pb2.ListStuckRevocationsResponse:
        await _require(context, READERS, "listing stuck revocations")
        if request.limit < 0 or request.min_age_seconds < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "limit and min_age_seconds must not be negative"
            )
        older_than = (
            self._ctx.clock.now() - timedelta(seconds=request.min_age_seconds)
            if request.min_age_seconds
            else None
        )
        page = await page_request_or_abort(
            context,
            page_size=request.page_size or request.limit,
            page_token=request.page_token,
            query=("stuck", request.agent_id, request.integration_id, request.min_age_seconds),
            default_size=200,
        )
        async with self._sessions() as session:
            rows, next_token = await list_stuck(
                session=session,
                agent_id=request.agent_id,
                integration_id=request.integration_id,
                older_than=older_than,
                page=page,
            )
            views = [
                await render_revocation(session=session, revocation=r, with_attempts=False)
                for r in rows
            ]
        return revoker_service_pb2.ListStuckRevocationsResponse(
            revocations=views, next_page_token=next_token
        )

    async def GetRevocation(
        self,
        request: revoker_service_pb2.GetRevocationRequest,
        context: grpc.aio.ServicerContext,
    ) -> revoker_service_pb2.RevocationView:
        await _require(context, READERS, "reading revocations")
        async with self._sessions() as session:
            revocation = await session.get(Revocation, request.grant_id)
            if revocation is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"no revocation for grant {request.grant_id!r}"
                )
            assert revocation is not None
            return await render_revocation(
                session=session, revocation=revocation, with_attempts=True
            )

    async def _resolve_each(
        self, grant_ids: list[str], resolve: Resolve, operator: str, reason: str
    ) -> AsyncIterator[revoker_service_pb2.RevocationProgress]:
        # One transaction per revocation: a refusal of one never undoes the others, and
        # progress reflects what is committed. A refusal is that item's answer, not the call's.
        for done, grant_id in enumerate(grant_ids, start=1):
            try:
                async with self._work.transaction() as session:
                    detail = await resolve(
                        session=session,
                        grant_id=grant_id,
                        operator=operator,
                        reason=reason,
                        ctx=self._ctx,
                    )
                ok = True
            except Refused as refusal:
                ok, detail = False, refusal.message
            yield revoker_service_pb2.RevocationProgress(
                done=done, total=len(grant_ids), grant_id=grant_id, ok=ok, detail=detail
            )

    async def ReplayRevocations(
        self,
        request: revoker_service_pb2.ReplayRevocationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[revoker_service_pb2.RevocationProgress]:
        operator = await _require(context, OPERATORS, "replaying revocations")
        grant_ids = list(dict.fromkeys(request.grant_ids))
        if request.agent_id:
            async with self._sessions() as session:
                # Everything stuck for the agent, in one bounded read (it was 100 000 before
                # paging existed; a replay of more is done in several calls).
                stuck, _ = await list_stuck(
                    session=session,
                    agent_id=request.agent_id,
                    integration_id="",
                    older_than=None,
                    page=PageRequest(size=100_000, after=None, query="replay"),
                )
            grant_ids += [r.grant_id for r in stuck if r.grant_id not in grant_ids]
        if not grant_ids and not request.agent_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "name grant ids or an agent_id to replay"
            )
        async for progress in self._resolve_each(
            grant_ids, replay_stuck_revocation, operator, request.reason
        ):
            yield progress

    async def CancelRevocations(
        self,
        request: revoker_service_pb2.CancelRevocationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[revoker_service_pb2.RevocationProgress]:
        operator = await _require(context, OPERATORS, "canceling revocations")
        if not request.grant_ids:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name the grant ids to cancel")
        if not request.reason.strip():
            # The access may stay in the target: the audit trail must say who decided so, and why.
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "reason is required: say why these revocations are given up (it is audited)",
            )
        if not request.acknowledge_access_may_remain:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"canceling means {CANCEL_WARNING}; confirm with acknowledge_access_may_remain",
            )
        grant_ids = list(dict.fromkeys(request.grant_ids))
        async for progress in self._resolve_each(
            grant_ids, cancel_stuck_revocation, operator, request.reason
        ):
            yield progress

    async def ListAgents(
        self,
        request: revoker_service_pb2.ListAgentsRequest,
        context: grpc.aio.ServicerContext,
    ) -> revoker_service_pb2.ListAgentsResponse:
        await _require(context, READERS, "listing agents")
        page = await page_request_or_abort(
            context, page_size=request.page_size, page_token=request.page_token, query=("agents",)
        )
        now = self._ctx.clock.now()
        async with self._sessions() as session:
            statuses = await agent_statuses(session=session)
        # One row per agent (a few per site): the page is cut from the list sorted by id.
        served, next_token = page_of(statuses, page=page, key=lambda s: (s.agent_id,))
        views = []
        for status in served:
            view = revoker_service_pb2.AgentView(
                agent_id=status.agent_id,
                online=status.online(now, self._offline_after),
                in_flight=status.in_flight,
                queued=status.queued,
                stuck=status.stuck,
            )
            age = status.heartbeat_age(now)
            if status.last_seen_at is not None and age is not None:
                view.last_heartbeat_at.FromDatetime(status.last_seen_at)
                view.heartbeat_age_seconds = age.total_seconds()
            views.append(view)
        return revoker_service_pb2.ListAgentsResponse(agents=views, next_page_token=next_token)

    async def EnrollAgent(
        self,
        request: revoker_service_pb2.EnrollAgentRequest,
        context: grpc.aio.ServicerContext,
    ) -> revoker_service_pb2.AgentRegistration:
        return await self._register_key(request, context, rotate=False)

    async def RotateAgentKey(
        self,
        request: revoker_service_pb2.EnrollAgentRequest,
        context: grpc.aio.ServicerContext,
    ) -> revoker_service_pb2.AgentRegistration:
        return await self._register_key(request, context, rotate=True)

    async def _register_key(
        self,
        request: revoker_service_pb2.EnrollAgentRequest,
        context: grpc.aio.ServicerContext,
        *,
        rotate: bool,
    ) -> revoker_service_pb2.AgentRegistration:
        return await self._change_registry(
            context,
            lambda session, actor: register_agent_key(
                session=session,
                agent_id=request.agent_id,
                public_key_pem=request.public_key_pem,
                rotate=rotate,
                actor=actor,
                topics=self._ctx.topics,
                clock=self._ctx.clock,
            ),
        )

    async def DisableAgent(
        self,
        request: revoker_service_pb2.DisableAgentRequest,
        context: grpc.aio.ServicerContext,
    ) -> revoker_service_pb2.AgentRegistration:
        return await self._change_registry(
            context,
            lambda session, actor: disable_agent(
                session=session,
                agent_id=request.agent_id,
                reason=request.reason,
                actor=actor,
                topics=self._ctx.topics,
                clock=self._ctx.clock,
            ),
        )

    async def _change_registry(
        self,
        context: grpc.aio.ServicerContext,
        change: Callable[[AsyncSession, str], Awaitable[EnrolledAgent]],
    ) -> revoker_service_pb2.AgentRegistration:
        """Admins only; the change and its registry event commit together."""
        actor = await _require(context, (ADMIN_ROLE,), "changing the agent registry")
        async with self._work(context) as session:
            agent = await change(session, actor)
        return _registration(agent)


def _registration(agent: EnrolledAgent) -> revoker_service_pb2.AgentRegistration:
    view = revoker_service_pb2.AgentRegistration(
        agent_id=agent.agent_id,
        status=agent.status,
        key_id=agent.key_id,
        changed_by=agent.changed_by,
    )
    view.changed_at.FromDatetime(agent.changed_at)
    return view


__all__ = ["RevocationState", "RevokerApi"]
