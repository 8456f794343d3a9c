"""RequestService gRPC: authentication is done by the interceptor; this maps protobuf to
operations, and the unit of work maps their refusals to status codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
from lapse_common.auth import ADMIN_ROLE, AUDITOR_ROLE, SRE_ROLE, Identity, current_identity
from lapse_common.clock import Clock, as_utc
from lapse_common.machine_identity import machine_name
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.paging import page_of, page_request_or_abort, time_key
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    common_pb2,
    request_service_pb2,
    request_service_pb2_grpc,
)
from lapse_common.service_credentials import ServiceCredentials
from lapse_common.topics import Topics
from lapse_common.unit_of_work import UnitOfWork
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_request.access_scope import Reach, authorize_scope, check_scope_shape
from lapse_request.lockdown_rows import load_lockdowns, lockdown_view
from lapse_request.models import AccessRequest
from lapse_request.operations.cancel_request import cancel_request
from lapse_request.operations.follow_revocation_run import (
    final_report,
    revocation_run_progress,
)
from lapse_request.operations.lift_lockdown import lift_lockdown
from lapse_request.operations.preview_revocation import preview_revocation
from lapse_request.operations.read_activity import (
    grant_view,
    list_requests,
    list_unverified_access,
    render_requests,
)
from lapse_request.operations.revoke_grant import revoke_grant
from lapse_request.operations.revoke_scope import revoke_scope
from lapse_request.operations.set_lockdown import set_lockdown
from lapse_request.operations.submit_request import submit_request, validate_submission

# The approval service's verdict is passed on unchanged: it owns the policy wording.
_PASSED_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    # Time window closed, auto-approval budget used up.
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class RequestApi(request_service_pb2_grpc.RequestServiceServicer):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        approval: approval_service_pb2_grpc.ApprovalServiceStub,
        approval_timeout: float,
        credentials: ServiceCredentials,
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
        offline_after: timedelta = timedelta(seconds=35),
        revocation_wait: timedelta = timedelta(seconds=120),
    ) -> None:
        self._sessions = sessions
        self._work = UnitOfWork(sessions, relay=relay)
        self._approval = approval
        self._approval_timeout = approval_timeout
        self._credentials = credentials
        self._offline_after = offline_after
        self._revocation_wait = revocation_wait
        self._topics = topics
        self._clock = clock

    async def SubmitRequest(
        self,
        request: request_service_pb2.SubmitRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.SubmitRequestResponse:
        identity = current_identity()
        if machine_name(identity.subject) is not None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "machine identities request access through AccessRequested access events",
            )
        validate_submission(
            integration_id=request.integration_id,
            resource=request.resource,
            permission=request.permission,
            principal=request.principal,
            duration_seconds=request.duration_seconds,
            justification=request.justification,
        )
        checked = await self._check_policy(request, identity, context)
        async with self._work(context) as session:
            row = await submit_request(
                session=session,
                identity=identity,
                checked=checked,
                justification=request.justification,
                topics=self._topics,
                clock=self._clock,
            )
            views = await render_requests(session=session, rows=[row])
        return request_service_pb2.SubmitRequestResponse(request=views[0])

    async def _check_policy(
        self,
        request: request_service_pb2.SubmitRequestRequest,
        identity: Identity,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.CheckRequestResponse:
        """The approval service's answer: the flow, the agent and the duration it allows."""
        try:
            checked: approval_service_pb2.CheckRequestResponse = await self._approval.CheckRequest(
                approval_service_pb2.CheckRequestRequest(
                    item=common_pb2.GrantSpec(
                        integration_id=request.integration_id,
                        resource=request.resource,
                        permission=request.permission,
                        principal=request.principal,
                    ),
                    duration_seconds=request.duration_seconds,
                    justification=request.justification,
                    requester_subject=identity.subject,
                    requester_groups=identity.groups,
                ),
                # Our own credential, never the caller's token: CheckRequest is internal.
                metadata=self._credentials.metadata_for("approval"),
                timeout=self._approval_timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _PASSED_THROUGH:
                await context.abort(error.code(), error.details() or "refused by policy")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the approval service could not check the request ({error.code().name}); "
                "nothing was recorded, try again",
            )
            raise  # abort() raises; this tells the type checker
        return checked

    async def CancelRequest(
        self,
        request: request_service_pb2.CancelRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.AccessRequestView:
        async with self._work(context) as session:
            row = await cancel_request(
                session=session,
                identity=current_identity(),
                request_id=request.request_id,
                reason=request.reason,
                topics=self._topics,
                clock=self._clock,
            )
            views = await render_requests(session=session, rows=[row])
        return views[0]

    async def GetRequest(
        self,
        request: request_service_pb2.GetRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.AccessRequestView:
        identity = current_identity()
        async with self._sessions() as session:
            row = await session.get(AccessRequest, request.request_id)
            # Someone else's request is reported as absent, so ids cannot be probed.
            if row is None or (
                row.requester != identity.subject and not identity.has_role(ADMIN_ROLE)
            ):
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no request {request.request_id!r}")
            assert row is not None  # abort() raises; this tells the type checker
            views = await render_requests(session=session, rows=[row])
        return views[0]

    async def ListActivity(
        self,
        request: request_service_pb2.ListActivityRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.ListActivityResponse:
        identity = current_identity()
        if request.all_users and not any(
            identity.has_role(role) for role in (ADMIN_ROLE, SRE_ROLE, AUDITOR_ROLE)
        ):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "listing everyone's activity needs the admin, sre or auditor role",
            )
        page = await page_request_or_abort(
            context,
            page_size=request.page_size or request.limit,
            page_token=request.page_token,
            query=("activity", identity.subject, request.all_users),
            default_size=50,
        )
        async with self._sessions() as session:
            rows, next_token = await list_requests(
                session=session,
                requester=None if request.all_users else identity.subject,
                page=page,
            )
            views = await render_requests(session=session, rows=rows)
        return request_service_pb2.ListActivityResponse(requests=views, next_page_token=next_token)

    async def ListUnverifiedAccess(
        self,
        request: request_service_pb2.ListUnverifiedAccessRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.ListUnverifiedAccessResponse:
        identity = current_identity()
        sees_all = any(identity.has_role(r) for r in (ADMIN_ROLE, SRE_ROLE, AUDITOR_ROLE))
        page = await page_request_or_abort(
            context,
            page_size=request.page_size,
            page_token=request.page_token,
            query=("unverified", identity.subject, sees_all),
        )
        async with self._sessions() as session:
            grants, next_token = await list_unverified_access(
                session=session, requester=None if sees_all else identity.subject, page=page
            )
        return request_service_pb2.ListUnverifiedAccessResponse(
            grants=grants, next_page_token=next_token
        )

    async def RevokeGrant(
        self,
        request: request_service_pb2.RevokeGrantRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.GrantView:
        async with self._work(context) as session:
            grant = await revoke_grant(
                session=session,
                identity=current_identity(),
                grant_id=request.grant_id,
                reason=request.reason,
                topics=self._topics,
                clock=self._clock,
            )
        return grant_view(grant, [])

    async def PreviewRevocation(
        self,
        request: request_service_pb2.ScopedRevocationRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.RevocationPreview:
        reach = authorize_scope(
            current_identity(),
            request.scope,
            approved_by_me=request.approved_by_me,
            admin_only=_admin_only(request),
        )
        check_scope_shape(request.scope, reach=reach)
        async with self._sessions() as session:
            return await preview_revocation(
                session=session,
                scope=request.scope,
                reach=reach,
                clock=self._clock,
                offline_after=self._offline_after,
            )

    async def RevokeScope(
        self,
        request: request_service_pb2.ScopedRevocationRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[request_service_pb2.RevocationRunProgress]:
        identity = current_identity()
        if request.wait_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "wait_seconds must be >= 0")
        if request.panic and not request.reason.strip():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the panic button needs a reason (audited)"
            )
        reach = authorize_scope(
            identity,
            request.scope,
            approved_by_me=request.approved_by_me,
            admin_only=_admin_only(request),
        )
        async with self._work(context) as session:
            run = await revoke_scope(
                session=session,
                actor=identity.subject,
                scope=request.scope,
                reach=reach,
                reason=_reason_for(request, reach),
                detail=request.reason,
                topics=self._topics,
                clock=self._clock,
                end_sessions=request.end_sessions or request.panic,
                cancel_pending=request.panic,
                lockdown=request.lockdown,
                expected_fingerprint=request.preview_fingerprint,
            )
        wait = (
            timedelta(seconds=request.wait_seconds)
            if request.wait_seconds
            else self._revocation_wait
        )
        async for progress in self._follow(run.run_id, lockdown_id=run.lockdown_id, wait=wait):
            yield progress

    async def _follow(
        self, run_id: str, *, lockdown_id: str, wait: timedelta
    ) -> AsyncIterator[request_service_pb2.RevocationRunProgress]:
        """Progress as it changes (at least every few seconds), then the final report."""
        deadline = self._clock.now() + wait
        last: request_service_pb2.RevocationRunProgress | None = None
        quiet_since = self._clock.now()
        while True:
            async with self._sessions() as session:
                progress, unconfirmed = await revocation_run_progress(
                    session=session,
                    run_id=run_id,
                    clock=self._clock,
                    offline_after=self._offline_after,
                )
            progress.lockdown_id = lockdown_id
            if progress.done or self._clock.now() >= deadline:
                final = final_report(progress, unconfirmed)
                final.done = True
                yield final
                return
            if (
                last is None
                or progress != last
                or (self._clock.now() - quiet_since > PROGRESS_HEARTBEAT)
            ):
                yield progress
                last, quiet_since = progress, self._clock.now()
            await asyncio.sleep(PROGRESS_POLL_SECONDS)

    async def ListLockdowns(
        self,
        request: request_service_pb2.ListLockdownsRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.ListLockdownsResponse:
        await _require_admin(context, "listing lockdowns")
        page = await page_request_or_abort(
            context,
            page_size=request.page_size,
            page_token=request.page_token,
            query=("lockdowns", request.include_lifted),
        )
        async with self._sessions() as session:
            rows = await load_lockdowns(session, include_lifted=request.include_lifted)
        # Lockdowns are few (each is an incident); the page is cut from the sorted list.
        served, next_token = page_of(
            rows, page=page, key=lambda r: time_key(as_utc(r.set_at), r.lockdown_id)
        )
        return request_service_pb2.ListLockdownsResponse(
            lockdowns=[lockdown_view(r) for r in served], next_page_token=next_token
        )

    async def SetLockdown(
        self,
        request: request_service_pb2.SetLockdownRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.Lockdown:
        identity = await _require_admin(context, "setting a lockdown")
        if not request.reason.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a lockdown needs a reason")
        async with self._work(context) as session:
            row = await set_lockdown(
                session=session,
                actor=identity.subject,
                scope=request.scope,
                reason=request.reason,
                topics=self._topics,
                clock=self._clock,
            )
        return lockdown_view(row)

    async def LiftLockdown(
        self,
        request: request_service_pb2.LiftLockdownRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.Lockdown:
        identity = await _require_admin(context, "lifting a lockdown")
        if not request.lockdown_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "lockdown_id is required")
        async with self._work(context) as session:
            rows = await lift_lockdown(
                session=session,
                actor=identity.subject,
                reason=request.reason,
                topics=self._topics,
                clock=self._clock,
                lockdown_id=request.lockdown_id,
            )
        return lockdown_view(rows[0])


# How often a scoped revocation's progress is read, and the longest silence on the stream.
PROGRESS_POLL_SECONDS = 0.5
PROGRESS_HEARTBEAT = timedelta(seconds=5)


def _admin_only(request: request_service_pb2.ScopedRevocationRequest) -> str:
    if request.panic:
        return "the panic button"
    return "a lockdown" if request.lockdown else ""


def _reason_for(
    request: request_service_pb2.ScopedRevocationRequest, reach: Reach
) -> common_pb2.Reason.ValueType:
    if request.panic:
        return common_pb2.REASON_PANIC
    if reach.approved_by:
        return common_pb2.REASON_APPROVER
    return common_pb2.REASON_USER if reach.owner else common_pb2.REASON_ADMIN


async def _require_admin(context: grpc.aio.ServicerContext, what: str) -> Identity:
    identity = current_identity()
    if not identity.has_role(ADMIN_ROLE):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{what} needs the admin role")
    return identity
