"""Approval policies on the real system: who may decide, how many must agree, escalation,
rejection, self-approval, timeouts and cancellation; approved access reaches the target."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    common_pb2,
    request_service_pb2,
)

from tests.integration.clients import StackClients, bearer, has_role, run_cli
from tests.integration.revocation_support import submit
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]
APPROVED = common_pb2.REQUEST_STATUS_APPROVED
REJECTED = common_pb2.REQUEST_STATUS_REJECTED
PENDING = common_pb2.REQUEST_STATUS_PENDING_APPROVAL


class Approvals:
    def __init__(self, stack: LapseStack) -> None:
        self.stack = stack
        self.channel = stack.aio_channel("approval")
        self.stub = approval_service_pb2_grpc.ApprovalServiceStub(self.channel)

    async def pending(self, approver: str, groups: tuple[str, ...] = ()) -> list[str]:
        response = await self.stub.ListPendingApprovals(
            approval_service_pb2.ListPendingApprovalsRequest(),
            metadata=bearer(self.stack.token(approver, groups=groups)),
        )
        return [p.request_id for p in response.approvals]

    async def decide(
        self,
        approver: str,
        request_id: str,
        *,
        approve: bool,
        reason: str = "",
        groups: tuple[str, ...] = (),
    ) -> str:
        response = await self.stub.DecideRequest(
            approval_service_pb2.DecideRequestRequest(
                request_id=request_id, approve=approve, reason=reason
            ),
            metadata=bearer(self.stack.token(approver, groups=groups)),
        )
        return response.status

    async def close(self) -> None:
        await self.channel.close()


async def request_status(
    clients: StackClients, stack: LapseStack, request_id: str, user: str
) -> int:
    return (await clients.get_request(request_id, stack.token(user))).status


async def settled(
    clients: StackClients, stack: LapseStack, request_id: str, user: str, status: int
) -> None:
    await wait_for(
        lambda: request_status(clients, stack, request_id, user),
        lambda s: s == status,
        what=f"{request_id} {common_pb2.RequestStatus.Name(status)}",  # type: ignore[arg-type]
    )


async def until_listed(
    approvals: Approvals, approver: str, request_id: str, groups: tuple[str, ...] = ()
) -> None:
    await wait_for(
        lambda: approvals.pending(approver, groups),
        lambda ids: request_id in ids,
        what=f"{approver} to see it",
    )


@pytest.mark.parametrize(
    ("resource", "user", "votes", "final"),
    [
        ("g-any", "u01", [("approver-b", True, "")], APPROVED),
        ("g-all", "u02", [("approver-a", True, ""), ("approver-b", True, "")], APPROVED),
        ("g-2of3", "u03", [("approver-c", True, ""), ("approver-a", True, "")], APPROVED),
        ("g-any", "u04", [("approver-a", False, "change freeze")], REJECTED),
        (
            "g-2of3",
            "u05",
            [("approver-a", True, ""), ("approver-b", False, "not this week")],
            REJECTED,
        ),
    ],
)
async def test_quorum_policies(
    stack: LapseStack, resource: str, user: str, votes: list[tuple[str, bool, str]], final: int
) -> None:
    clients, approvals = StackClients(stack), Approvals(stack)
    login = stack.login_for(user)
    try:
        request_id = await submit(clients, stack, user=user, resource=resource, seconds=60)
        assert await request_status(clients, stack, request_id, user) == PENDING
        await until_listed(approvals, votes[0][0], request_id)
        for index, (approver, approve, reason) in enumerate(votes):
            status = await approvals.decide(approver, request_id, approve=approve, reason=reason)
            last = index == len(votes) - 1
            assert status == (
                "PENDING_APPROVAL"
                if not last
                else common_pb2.RequestStatus.Name(final).removeprefix("REQUEST_STATUS_")
            ), (index, status)  # type: ignore[arg-type]
        await settled(clients, stack, request_id, user, final)
        view = await clients.get_request(request_id, stack.token(user))
        assert all(
            v[0] in view.decided_by or v[0] in view.decision_detail
            for v in votes
            if v[1] == (final == APPROVED)
        )
        if final == APPROVED:
            await wait_for(
                lambda: has_role(
                    stack.infra.target_admin_dsn, login=login, role=stack.gated_role(resource)
                ),
                bool,
                what="the approved access in the target",
            )
        else:
            await asyncio.sleep(1)
            assert not view.grants
            assert not await has_role(
                stack.infra.target_admin_dsn, login=login, role=stack.gated_role(resource)
            )
    finally:
        await clients.close()
        await approvals.close()


async def test_approvers_see_and_decide_only_their_requests(stack: LapseStack) -> None:
    clients, approvals = StackClients(stack), Approvals(stack)
    try:
        request_id = await submit(clients, stack, user="u06", resource="g-any", seconds=60)
        await until_listed(approvals, "approver-a", request_id)
        assert request_id not in await approvals.pending("approver-c")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await approvals.decide("approver-c", request_id, approve=True)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as unexplained:
            await approvals.decide("approver-a", request_id, approve=False)
        assert unexplained.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reason is required" in (unexplained.value.details() or "")

        # The requester withdraws it: approvers no longer see it, nobody can decide it.
        await clients.requests.CancelRequest(
            request_service_pb2.CancelRequestRequest(request_id=request_id, reason="not needed"),
            metadata=bearer(stack.token("u06")),
        )
        await wait_for(
            lambda: approvals.pending("approver-a"),
            lambda ids: request_id not in ids,
            what="the canceled request to leave approver-a's inbox",
        )
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await approvals.decide("approver-a", request_id, approve=True)
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (
            await request_status(clients, stack, request_id, "u06")
            == common_pb2.REQUEST_STATUS_CANCELED
        )
    finally:
        await clients.close()
        await approvals.close()


async def test_requester_cannot_approve_self(stack: LapseStack) -> None:
    clients, approvals = StackClients(stack), Approvals(stack)
    engineers = ("engineering",)
    try:
        request_id = await submit(clients, stack, user="u07", resource="g-self", seconds=60)
        await until_listed(approvals, "u08", request_id, engineers)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await approvals.decide("u07", request_id, approve=True, groups=engineers)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "requester cannot approve self" in (refused.value.details() or "")
        # Another engineer can; through the CLI, as an approver would.
        token = stack.token("u08", groups=engineers)
        listed = run_cli(stack, "approvals", token=token)
        assert request_id in listed.stdout, listed.stderr
        approved = run_cli(stack, "approve", request_id, "--reason", "pairing on it", token=token)
        assert approved.returncode == 0 and "now APPROVED" in approved.stdout, approved.stderr
        await settled(clients, stack, request_id, "u07", APPROVED)
    finally:
        await clients.close()
        await approvals.close()


async def test_escalation_asks_tier_two_after_the_interval(stack: LapseStack) -> None:
    clients, approvals = StackClients(stack), Approvals(stack)
    try:
        request_id = await submit(clients, stack, user="u09", resource="g-esc", seconds=60)
        await until_listed(approvals, "approver-a", request_id)
        assert request_id not in await approvals.pending("manager-1")
        with pytest.raises(grpc.aio.AioRpcError) as early:
            await approvals.decide("manager-1", request_id, approve=True)
        assert early.value.code() == grpc.StatusCode.NOT_FOUND
        await until_listed(approvals, "manager-1", request_id)  # after 3 s, tier 2 is asked
        assert await approvals.decide("manager-1", request_id, approve=True) == "APPROVED"
        await settled(clients, stack, request_id, "u09", APPROVED)
    finally:
        await clients.close()
        await approvals.close()


async def test_undecided_request_expires(stack: LapseStack) -> None:
    clients = StackClients(stack)
    try:
        request_id = await submit(clients, stack, user="u00", resource="g-timeout", seconds=60)
        await settled(clients, stack, request_id, "u00", common_pb2.REQUEST_STATUS_APPROVAL_EXPIRED)
        view = await clients.get_request(request_id, stack.token("u00"))
        assert not view.grants and "approval timeout" in view.decision_detail
    finally:
        await clients.close()
