"""The request and approval services' gRPC APIs, called as the person in chat: every call
carries a short-lived token naming that person (`subject_tokens`), so the services authorize
them by their own records of that person, as they would on the CLI."""

from __future__ import annotations

import grpc
from lapse_common.grpc_transport import GrpcTransportSettings, open_aio_channel
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    request_service_pb2,
    request_service_pb2_grpc,
)
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from lapse_chatops.directory import Person
from lapse_chatops.grammar import RequestCommand
from lapse_chatops.subject_tokens import SubjectTokenMinter


class LapseRefused(Exception):
    """A service said no (or could not be reached); `message` is fit to show the person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LapseApi:
    def __init__(
        self,
        *,
        request_address: str,
        approval_address: str,
        tokens: SubjectTokenMinter,
        timeout_seconds: float,
        transport: GrpcTransportSettings,
    ) -> None:
        self._request_address = request_address
        self._approval_address = approval_address
        # Traces continue from here into the services.
        tracing = aio_client_interceptors()  # type: ignore[no-untyped-call]
        self._request_channel = open_aio_channel(request_address, transport, interceptors=tracing)
        self._approval_channel = open_aio_channel(approval_address, transport, interceptors=tracing)
        self._requests = request_service_pb2_grpc.RequestServiceStub(self._request_channel)
        self._approvals = approval_service_pb2_grpc.ApprovalServiceStub(self._approval_channel)
        self._tokens = tokens
        self._timeout = timeout_seconds

    def _metadata(self, person: Person) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._tokens.token_for(person.subject)}"),)

    def _refused(self, error: grpc.aio.AioRpcError, service: str, address: str) -> LapseRefused:
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return LapseRefused(code.name, f"cannot reach the {service} service at {address}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return LapseRefused(
                code.name,
                f"the {service} service did not answer within {self._timeout:g}s; "
                "it may still have acted: check `lapse activity`",
            )
        return LapseRefused(code.name, error.details() or code.name)

    async def submit(
        self, person: Person, command: RequestCommand
    ) -> request_service_pb2.AccessRequestView:
        try:
            response = await self._requests.SubmitRequest(
                request_service_pb2.SubmitRequestRequest(
                    integration_id=command.integration_id,
                    resource=command.resource,
                    permission=command.permission,
                    principal=command.principal,
                    duration_seconds=command.duration_seconds,
                    justification=command.justification,
                ),
                metadata=self._metadata(person),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise self._refused(error, "request", self._request_address) from error
        view: request_service_pb2.AccessRequestView = response.request
        return view

    async def approval_mode(self, person: Person, flow: str) -> str | None:
        """How flow `flow` approves (`auto`, `any_of`, ...), or None if it is not listed."""
        try:
            response = await self._approvals.ListFlows(
                approval_service_pb2.ListFlowsRequest(),
                metadata=self._metadata(person),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise self._refused(error, "approval", self._approval_address) from error
        return next((str(f.approval) for f in response.flows if f.name == flow), None)

    async def decide(self, person: Person, *, request_id: str, approve: bool, reason: str) -> str:
        """The request's status after this vote: PENDING_APPROVAL, APPROVED or REJECTED."""
        try:
            response = await self._approvals.DecideRequest(
                approval_service_pb2.DecideRequestRequest(
                    request_id=request_id, approve=approve, reason=reason
                ),
                metadata=self._metadata(person),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise self._refused(error, "approval", self._approval_address) from error
        return str(response.status)

    async def close(self) -> None:
        await self._request_channel.close()
        await self._approval_channel.close()
