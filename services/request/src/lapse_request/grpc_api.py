"""RequestService gRPC: authentication is done by the interceptor; this maps protobuf to
operations and operation errors to status codes."""

from __future__ import annotations

import grpc
from lapse_common.auth import ADMIN_ROLE, AUDITOR_ROLE, SRE_ROLE, current_identity
from lapse_common.clock import Clock
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    common_pb2,
    request_service_pb2,
    request_service_pb2_grpc,
)
from lapse_common.topics import Topics
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_request.models import AccessRequest
from lapse_request.operations.cancel_request import CancelRefused, cancel_request
from lapse_request.operations.read_activity import (
    grant_view,
    list_requests,
    list_unverified_access,
    render_requests,
)
from lapse_request.operations.revoke_grant import RevokeRefused, revoke_grant
from lapse_request.operations.submit_request import (
    InvalidSubmission,
    record_submission,
    validate_submission,
)

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
MAX_LIST = 500


class RequestApi(request_service_pb2_grpc.RequestServiceServicer):
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        approval: approval_service_pb2_grpc.ApprovalServiceStub,
        approval_timeout: float,
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._approval = approval
        self._approval_timeout = approval_timeout
        self._relay = relay
        self._topics = topics
        self._clock = clock

    async def SubmitRequest(
        self,
        request: request_service_pb2.SubmitRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.SubmitRequestResponse:
        identity = current_identity()
        try:
            validate_submission(
                integration_id=request.integration_id,
                resource=request.resource,
                permission=request.permission,
                principal=request.principal,
                duration_seconds=request.duration_seconds,
                justification=request.justification,
            )
        except InvalidSubmission as problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(problem))
        try:
            checked = await self._approval.CheckRequest(
                approval_service_pb2.CheckRequestRequest(
                    item=common_pb2.GrantSpec(
                        integration_id=request.integration_id,
                        resource=request.resource,
                        permission=request.permission,
                        principal=request.principal,
                    ),
                    duration_seconds=request.duration_seconds,
                    justification=request.justification,
                ),
                metadata=(("authorization", f"Bearer {identity.token}"),),
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
        async with self._sessions() as session, session.begin():
            row = await record_submission(
                session=session,
                identity=identity,
                checked=checked,
                justification=request.justification,
                topics=self._topics,
                clock=self._clock,
            )
            views = await render_requests(session=session, rows=[row])
        self._relay.wake()
        return request_service_pb2.SubmitRequestResponse(request=views[0])

    async def CancelRequest(
        self,
        request: request_service_pb2.CancelRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.AccessRequestView:
        try:
            async with self._sessions() as session, session.begin():
                row = await cancel_request(
                    session=session,
                    identity=current_identity(),
                    request_id=request.request_id,
                    reason=request.reason,
                    topics=self._topics,
                    clock=self._clock,
                )
                views = await render_requests(session=session, rows=[row])
        except CancelRefused as refusal:
            code = (
                grpc.StatusCode.NOT_FOUND
                if refusal.not_found
                else grpc.StatusCode.PERMISSION_DENIED
                if refusal.forbidden
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            await context.abort(code, str(refusal))
        self._relay.wake()
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
        if request.limit < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "limit must not be negative")
        limit = min(request.limit or 50, MAX_LIST)
        async with self._sessions() as session:
            rows = await list_requests(
                session=session,
                requester=None if request.all_users else identity.subject,
                limit=limit,
            )
            views = await render_requests(session=session, rows=rows)
        return request_service_pb2.ListActivityResponse(requests=views)

    async def ListUnverifiedAccess(
        self,
        request: request_service_pb2.ListUnverifiedAccessRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.ListUnverifiedAccessResponse:
        identity = current_identity()
        sees_all = any(identity.has_role(r) for r in (ADMIN_ROLE, SRE_ROLE, AUDITOR_ROLE))
        async with self._sessions() as session:
            grants = await list_unverified_access(
                session=session, requester=None if sees_all else identity.subject
            )
        return request_service_pb2.ListUnverifiedAccessResponse(grants=grants)

    async def RevokeGrant(
        self,
        request: request_service_pb2.RevokeGrantRequest,
        context: grpc.aio.ServicerContext,
    ) -> request_service_pb2.GrantView:
        try:
            async with self._sessions() as session, session.begin():
                grant = await revoke_grant(
                    session=session,
                    identity=current_identity(),
                    grant_id=request.grant_id,
                    reason=request.reason,
                    topics=self._topics,
                    clock=self._clock,
                )
                view = grant_view(grant, [])
        except RevokeRefused as refusal:
            code = (
                grpc.StatusCode.NOT_FOUND
                if refusal.not_found
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            await context.abort(code, str(refusal))
        self._relay.wake()
        return view
