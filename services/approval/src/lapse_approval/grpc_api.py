"""ApprovalService gRPC: thin translation between protobuf and the operations."""

from __future__ import annotations

from datetime import timedelta

import grpc
from lapse_common.auth import ADMIN_ROLE, current_identity
from lapse_common.clock import Clock
from lapse_common.messaging.outbox import OutboxRelay
from lapse_common.paging import page_of, page_request_or_abort
from lapse_common.pb.lapse.v1 import approval_service_pb2, approval_service_pb2_grpc, common_pb2
from lapse_common.topics import Topics
from lapse_common.unit_of_work import UnitOfWork
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lapse_approval.live_catalog import LiveCatalog
from lapse_approval.operations.apply_flows import apply_flows, validate_flows
from lapse_approval.operations.auto_approve_budget import enforce_auto_approve_budget
from lapse_approval.operations.check_request import check_request
from lapse_approval.operations.decide_request import decide_request
from lapse_approval.operations.extend_grant import extend_grant
from lapse_approval.operations.list_pending_approvals import list_pending_approvals

# Methods only other Lapse services call, and which: a person's token is refused there.
INTERNAL_METHODS = {
    "/lapse.v1.ApprovalService/CheckRequest": frozenset({"request"}),
}


class ApprovalApi(approval_service_pb2_grpc.ApprovalServiceServicer):
    def __init__(
        self,
        catalog: LiveCatalog,
        *,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self._catalog = catalog
        self._sessions = sessions
        self._work = UnitOfWork(sessions, relay=relay)
        self._topics = topics
        self._clock = clock

    async def ListPendingApprovals(
        self,
        request: approval_service_pb2.ListPendingApprovalsRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.ListPendingApprovalsResponse:
        approver = current_identity()
        page = await page_request_or_abort(
            context,
            page_size=request.page_size,
            page_token=request.page_token,
            query=("pending", approver.subject),
        )
        async with self._sessions() as session:
            pending, next_token = await list_pending_approvals(
                session=session,
                approver=approver,
                catalog=self._catalog.current,
                clock=self._clock,
                page=page,
            )
        return approval_service_pb2.ListPendingApprovalsResponse(
            approvals=pending, next_page_token=next_token
        )

    async def DecideRequest(
        self,
        request: approval_service_pb2.DecideRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.DecideRequestResponse:
        if not request.request_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id is required")
        async with self._work(context) as session:
            status = await decide_request(
                session=session,
                approver=current_identity(),
                request_id=request.request_id,
                approve=request.approve,
                reason=request.reason,
                catalog=self._catalog.current,
                topics=self._topics,
                clock=self._clock,
            )
        return approval_service_pb2.DecideRequestResponse(status=status)

    async def CheckRequest(
        self,
        request: approval_service_pb2.CheckRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.CheckRequestResponse:
        # The caller is the request service (INTERNAL_METHODS); the person asking is who it
        # verified and named in the request.
        subject = request.requester_subject
        if not subject.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requester_subject is required")
        if request.duration_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "duration_seconds must be >= 0")
        allowed = check_request(
            catalog=self._catalog.current,
            subject=subject,
            groups=tuple(request.requester_groups),
            integration_id=request.item.integration_id,
            resource=request.item.resource,
            permission=request.item.permission,
            principal=request.item.principal,
            duration=timedelta(seconds=request.duration_seconds)
            if request.duration_seconds
            else None,
            justification=request.justification,
            now=self._clock.now(),
        )
        if allowed.flow.policy.mode == "auto":
            async with self._sessions() as session:
                await enforce_auto_approve_budget(
                    session,
                    flow=allowed.flow,
                    requester=subject,
                    now=self._clock.now(),
                )
        item = common_pb2.GrantSpec()
        item.CopyFrom(request.item)
        item.agent_id = allowed.agent_id
        return approval_service_pb2.CheckRequestResponse(
            flow=allowed.flow.name,
            item=item,
            duration_seconds=int(allowed.duration.total_seconds()),
            approval=allowed.flow.approval,
        )

    async def ListFlows(
        self,
        request: approval_service_pb2.ListFlowsRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.ListFlowsResponse:
        page = await page_request_or_abort(
            context, page_size=request.page_size, page_token=request.page_token, query=("flows",)
        )
        views = []
        for flow in self._catalog.current.flows:
            for target in flow.targets:
                views.append(
                    approval_service_pb2.FlowView(
                        name=flow.name,
                        approval=flow.approval,
                        requestor_users=sorted(flow.requestor_users),
                        requestor_groups=sorted(flow.requestor_groups),
                        integration_id=target.integration,
                        resources=target.resources,
                        permissions=target.permissions,
                        default_duration_seconds=int(flow.default_duration.total_seconds()),
                        max_duration_seconds=int(flow.max_duration.total_seconds()),
                        justification_required=flow.justification_required,
                    )
                )
        # Flows are policy written by hand, held in memory: the page is cut from the list,
        # in the order the files give them (a flow with several targets gives several views).
        numbered = [(f"{n:08d}", view) for n, view in enumerate(views)]
        served, next_token = page_of(numbered, page=page, key=lambda pair: (pair[0],))
        return approval_service_pb2.ListFlowsResponse(
            flows=[view for _, view in served], next_page_token=next_token
        )

    async def ValidateFlows(
        self,
        request: approval_service_pb2.ApplyFlowsRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.ApplyFlowsResponse:
        # Validating is the first half of applying, and its error report describes the
        # policy in force (integrations, principals): the same role as applying.
        if not current_identity().has_role(ADMIN_ROLE):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "validating Access Flows needs the admin role"
            )
        catalog = validate_flows([(f.name, f.content) for f in request.files])
        return approval_service_pb2.ApplyFlowsResponse(
            flows=len(catalog.flows), integrations=len(catalog.integrations)
        )

    async def ApplyFlows(
        self,
        request: approval_service_pb2.ApplyFlowsRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.ApplyFlowsResponse:
        identity = current_identity()
        if not identity.has_role(ADMIN_ROLE):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "applying Access Flows needs the admin role"
            )
        if not request.files:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no flow files given")
        async with self._work(context) as session:
            catalog, review = await apply_flows(
                session=session,
                files=[(f.name, f.content) for f in request.files],
                applied_by=identity.subject,
                topics=self._topics,
                clock=self._clock,
            )
        # Swapped only after the commit: a failed apply leaves the old flows in force.
        self._catalog.current = catalog
        return approval_service_pb2.ApplyFlowsResponse(
            flows=len(catalog.flows),
            integrations=len(catalog.integrations),
            pending_rejected=review.pending_rejected,
            approvals_withdrawn=review.approvals_withdrawn,
            approvals_shortened=review.approvals_shortened,
        )

    async def ExtendGrant(
        self,
        request: approval_service_pb2.ExtendGrantRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.ExtendGrantResponse:
        if request.extend_by_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "extend_by_seconds must be >= 0")
        async with self._work(context) as session:
            outcome = await extend_grant(
                session=session,
                identity=current_identity(),
                request_id=request.request_id,
                grant_id=request.grant_id,
                extend_by=timedelta(seconds=request.extend_by_seconds)
                if request.extend_by_seconds
                else None,
                catalog=self._catalog.current,
                topics=self._topics,
                clock=self._clock,
            )
        return approval_service_pb2.ExtendGrantResponse(
            extend_by_seconds=int(outcome.added.total_seconds()),
            extension_number=outcome.number,
            extensions_left=outcome.left,
            status="PENDING_APPROVAL" if outcome.pending_id else "APPROVED",
            extension_id=outcome.pending_id,
        )
