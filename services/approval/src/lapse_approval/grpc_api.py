"""ApprovalService gRPC: thin translation between protobuf and the operations."""

from __future__ import annotations

from datetime import timedelta

import grpc
from lapse_common.auth import current_identity
from lapse_common.pb.lapse.v1 import approval_service_pb2, approval_service_pb2_grpc, common_pb2

from lapse_approval.flows import Catalog
from lapse_approval.operations.check_request import Refusal, RequestRefused, check_request

REFUSAL_STATUS = {
    Refusal.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.NOT_ALLOWED: grpc.StatusCode.PERMISSION_DENIED,
    Refusal.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
}


class ApprovalApi(approval_service_pb2_grpc.ApprovalServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def CheckRequest(
        self,
        request: approval_service_pb2.CheckRequestRequest,
        context: grpc.aio.ServicerContext,
    ) -> approval_service_pb2.CheckRequestResponse:
        identity = current_identity()
        if request.duration_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "duration_seconds must be >= 0")
        try:
            allowed = check_request(
                catalog=self._catalog,
                subject=identity.subject,
                groups=identity.groups,
                integration_id=request.item.integration_id,
                resource=request.item.resource,
                permission=request.item.permission,
                principal=request.item.principal,
                duration=timedelta(seconds=request.duration_seconds)
                if request.duration_seconds
                else None,
                justification=request.justification,
            )
        except RequestRefused as refusal:
            await context.abort(REFUSAL_STATUS[refusal.kind], refusal.message)
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
        views = []
        for flow in self._catalog.flows:
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
        return approval_service_pb2.ListFlowsResponse(flows=views)
