"""Small helpers tests use to talk to a running stack and to the target."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    audit_service_pb2,
    audit_service_pb2_grpc,
    request_service_pb2,
    request_service_pb2_grpc,
)

from tests.integration.waiting import run_watched
from tests.stack import LapseStack


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class StackClients:
    def __init__(self, stack: LapseStack) -> None:
        self.stack = stack
        self._request_channel = stack.aio_channel("request")
        self._audit_channel = stack.aio_channel("audit")
        self.requests = request_service_pb2_grpc.RequestServiceStub(self._request_channel)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(self._audit_channel)

    async def close(self) -> None:
        await self._request_channel.close()
        await self._audit_channel.close()

    async def get_request(
        self, request_id: str, token: str
    ) -> request_service_pb2.AccessRequestView:
        return await self.requests.GetRequest(
            request_service_pb2.GetRequestRequest(request_id=request_id), metadata=bearer(token)
        )

    async def get_request_for_grant(self, grant_id: str, token: str) -> str:
        """The request id a grant belongs to, from the Activity view (admin/SRE token)."""
        listed = await self.requests.ListActivity(
            request_service_pb2.ListActivityRequest(all_users=True, limit=500),
            metadata=bearer(token),
        )
        for view in listed.requests:
            if any(g.grant_id == grant_id for g in view.grants):
                return view.request_id
        raise AssertionError(f"no request holds grant {grant_id}")

    async def audit_events(
        self, *, token: str, grant_id: str = "", request_id: str = ""
    ) -> list[audit_service_pb2.AuditEvent]:
        response = await self.audit.ListEvents(
            audit_service_pb2.ListAuditEventsRequest(
                grant_id=grant_id, request_id=request_id, limit=1000
            ),
            metadata=bearer(token),
        )
        return list(response.events)


async def has_role(target_dsn: str, *, login: str, role: str) -> bool:
    """Direct membership as the target records it (pg_auth_members), not inherited rights."""
    connection = await asyncpg.connect(target_dsn)
    try:
        return bool(
            await connection.fetchval(
                """
                SELECT EXISTS (
                  SELECT 1 FROM pg_auth_members m
                  JOIN pg_roles r ON r.oid = m.roleid
                  JOIN pg_roles u ON u.oid = m.member
                  WHERE r.rolname = $1 AND u.rolname = $2)
                """,
                role,
                login,
            )
        )
    finally:
        await connection.close()


def run_cli(
    stack: LapseStack,
    *args: str,
    token: str | None = None,
    answer: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The `lapse` command as a user runs it, against this stack; it may take as long as it
    keeps printing (a panic's progress), and is stopped only when it goes quiet."""
    env = {**stack.environment(), **(extra_env or {})}
    if token is not None:
        env["LAPSE_TOKEN"] = token
    return run_watched(
        [sys.executable, "-m", "lapse_cli", *args],
        env=env,
        answer=answer,
        what="lapse " + " ".join(args),
    )


async def pending_approvals(
    stack: LapseStack, approver: str, *, groups: tuple[str, ...] = ()
) -> list[approval_service_pb2.PendingApproval]:
    """What `approver` sees waiting for their decision."""
    async with stack.aio_channel("approval") as channel:
        response = await approval_service_pb2_grpc.ApprovalServiceStub(
            channel
        ).ListPendingApprovals(
            approval_service_pb2.ListPendingApprovalsRequest(),
            metadata=bearer(stack.token(approver, groups=groups)),
        )
    return list(response.approvals)
