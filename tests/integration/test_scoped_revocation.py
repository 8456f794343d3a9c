"""Ending access early on the real system: each person within their own reach (own grants,
grants they approved, admins anything), enforced by the server; scoped revocations with a
preview and progress; lockdowns that refuse new requests in their scope until lifted."""

from __future__ import annotations

import grpc
import pytest
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2

from tests.integration.clients import StackClients, bearer, has_role, pending_approvals, run_cli
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]
ACTIVE = common_pb2.GRANT_STATUS_ACTIVE
REVOKED = common_pb2.GRANT_STATUS_REVOKED


async def _revoke(
    clients: StackClients, stack: LapseStack, grant_id: str, caller: str
) -> request_service_pb2.GrantView:
    response: request_service_pb2.GrantView = await clients.requests.RevokeGrant(
        request_service_pb2.RevokeGrantRequest(grant_id=grant_id, reason="done early"),
        metadata=bearer(stack.token(caller, groups=())),
    )
    return response


async def test_each_caller_revokes_only_within_their_reach(stack: LapseStack) -> None:
    clients = StackClients(stack)
    target = stack.infra.target_admin_dsn
    try:
        own = await submit(clients, stack, user="p01", seconds=300)
        gated = await submit(clients, stack, user="p02", resource="g-any", seconds=300)
        await wait_for(
            lambda: pending_approvals(stack, "approver-a"),
            lambda pending: any(p.request_id == gated for p in pending),
            what="p02's request to reach approver-a",
        )
        approved = run_cli(stack, "approve", gated, token=stack.token("approver-a", groups=()))
        assert approved.returncode == 0, approved.stderr
        own_grant = await wait_grant(clients, stack, own, status=ACTIVE)
        gated_grant = await wait_grant(clients, stack, gated, status=ACTIVE)

        # Another user, and an approver of the flow who did not approve this request.
        for caller, grant_id in (
            ("p03", gated_grant.grant_id),
            ("approver-b", gated_grant.grant_id),
            ("p02", own_grant.grant_id),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _revoke(clients, stack, grant_id, caller)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, caller
            assert "may not revoke grant" in (refused.value.details() or "")
        # Scoped: someone else's user scope is refused; what approver-b approved is nothing.
        other = run_cli(stack, "revoke", "--scope", "user=p02", "--yes", token=stack.token("p03"))
        assert other.returncode == 1 and "PERMISSION_DENIED" in other.stderr
        nothing = run_cli(
            stack, "revoke", "--approved-by-me", "--yes", token=stack.token("approver-b", groups=())
        )
        assert nothing.returncode == 0, nothing.stderr
        assert "Revoke 0 active grant(s)" in nothing.stdout
        view = await clients.get_request(gated, stack.token("p02"))
        assert view.grants[0].status == ACTIVE

        # The approver ends what they approved; the requester ends their own.
        await _revoke(clients, stack, gated_grant.grant_id, "approver-a")
        await _revoke(clients, stack, own_grant.grant_id, "p01")
        ended = await wait_grant(clients, stack, gated, status=REVOKED)
        assert ended.history[-1].reason == common_pb2.REASON_APPROVER
        mine = await wait_grant(clients, stack, own, status=REVOKED)
        assert mine.history[-1].reason == common_pb2.REASON_USER
        assert not await has_role(
            target, login=stack.login_for("p02"), role=stack.gated_role("g-any")
        )
        assert not await has_role(target, login=stack.login_for("p01"), role=stack.read_role)
    finally:
        await clients.close()


async def test_a_user_revokes_all_their_access_by_scope_with_progress(stack: LapseStack) -> None:
    clients = StackClients(stack)
    try:
        requests = [
            await submit(clients, stack, user="p04", resource=resource, seconds=300)
            for resource in ("r20", "r21", "r22")
        ]
        for request_id in requests:
            await wait_grant(clients, stack, request_id, status=ACTIVE)
        # Without --yes the CLI asks; a wrong answer revokes nothing.
        declined = run_cli(
            stack, "revoke", "--scope", "user=p04", token=stack.token("p04"), answer="no\n"
        )
        assert declined.returncode == 1 and "nothing was revoked" in declined.stderr
        done = run_cli(
            stack,
            "revoke",
            "--scope",
            "user=p04",
            "--scope",
            "resource=r21",
            token=stack.token("p04"),
            answer="revoke\n",
        )
        assert done.returncode == 0, done.stderr
        assert (
            "Revoke 1 active grant(s) of 1 user(s) in scope resource=r21, user=p04" in done.stdout
        )
        assert "all 1 grant(s) revoked and confirmed by their agents" in done.stdout
        rest = run_cli(stack, "revoke", "--scope", "user=p04", "--yes", token=stack.token("p04"))
        assert rest.returncode == 0, rest.stderr
        assert "all 2 grant(s) revoked and confirmed" in rest.stdout
        for index, request_id in enumerate(requests):
            await wait_grant(clients, stack, request_id, status=REVOKED)
            assert not await has_role(
                stack.infra.target_admin_dsn,
                login=stack.login_for("p04"),
                role=stack.bulk_role(20 + index),
            )
    finally:
        await clients.close()


async def test_lockdown_refuses_requests_in_scope_until_lifted(stack: LapseStack) -> None:
    clients = StackClients(stack)
    admin = stack.token("admin-1", roles=("admin",))
    try:
        refused_user = run_cli(
            stack,
            "lockdown",
            "set",
            "--scope",
            "resource=r25",
            "--reason",
            "x",
            token=stack.token("p05"),
        )
        assert refused_user.returncode == 1 and "PERMISSION_DENIED" in refused_user.stderr
        locked = run_cli(
            stack,
            "lockdown",
            "set",
            "--scope",
            "resource=r25",
            "--reason",
            "incident 7: r25 leaked",
            token=admin,
        )
        assert locked.returncode == 0, locked.stderr
        lockdown_id = locked.stdout.split()[0]
        assert lockdown_id.startswith("ld-") and "IN FORCE" in locked.stdout

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(clients, stack, user="p05", resource="r25", seconds=60)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = refused.value.details() or ""
        assert f"refused: lockdown {lockdown_id} (resource=r25) set by admin-1" in message
        assert (
            "incident 7: r25 leaked" in message and f"lapse lockdown lift {lockdown_id}" in message
        )
        # Outside the scope, requests go through.
        outside = await submit(clients, stack, user="p05", resource="r26", seconds=60)
        await wait_grant(clients, stack, outside, status=ACTIVE)

        listed = run_cli(stack, "lockdown", "list", token=admin)
        assert lockdown_id in listed.stdout
        lifted = run_cli(
            stack, "lockdown", "lift", lockdown_id, "--reason", "contained", token=admin
        )
        assert lifted.returncode == 0, lifted.stderr
        assert "lifted by admin-1" in lifted.stdout
        again = await submit(clients, stack, user="p05", resource="r25", seconds=60)
        await wait_grant(clients, stack, again, status=ACTIVE)
        twice = run_cli(stack, "lockdown", "lift", lockdown_id, token=admin)
        assert twice.returncode == 1 and "NOT_FOUND" in twice.stderr
    finally:
        await clients.close()


async def test_revoking_one_of_two_overlapping_grants_keeps_the_access(stack: LapseStack) -> None:
    clients = StackClients(stack)
    target, login, role = stack.infra.target_admin_dsn, stack.login_for("p08"), stack.bulk_role(23)
    try:
        first = await submit(clients, stack, user="p08", resource="r23", seconds=300)
        first_grant = await wait_grant(clients, stack, first, status=ACTIVE)
        second = await submit(clients, stack, user="p08", resource="r23", seconds=600)
        second_grant = await wait_grant(clients, stack, second, status=ACTIVE)

        await _revoke(clients, stack, first_grant.grant_id, "p08")
        ended = await wait_grant(clients, stack, first, status=REVOKED)
        assert f"overlapping grant {second_grant.grant_id}" in ended.history[-1].detail
        assert await has_role(target, login=login, role=role)

        await _revoke(clients, stack, second_grant.grant_id, "p08")
        await wait_grant(clients, stack, second, status=REVOKED)
        assert not await has_role(target, login=login, role=role)
    finally:
        await clients.close()
