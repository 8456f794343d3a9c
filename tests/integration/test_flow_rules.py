"""Flow rules beyond approvers, on the real system: auto-approval budget, time windows,
extensions, and policy changes applied to what already exists."""

from __future__ import annotations

import grpc
import pytest
from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import approval_service_pb2, approval_service_pb2_grpc, common_pb2

from tests.integration.clients import StackClients, bearer, has_role, pending_approvals, run_cli
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]


async def test_auto_approve_budget_is_enforced(stack: LapseStack) -> None:
    clients = StackClients(stack)
    try:
        first = await submit(clients, stack, user="u01", resource="g-budget", seconds=20)
        await wait_grant(clients, stack, first, status=common_pb2.GRANT_STATUS_ACTIVE)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(clients, stack, user="u01", resource="g-budget", seconds=20)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "used the 1 automatic approval(s) flow 'flow-g-budget' allows per 1h" in (
            refused.value.details() or ""
        )
        # The budget is per requester: another engineer still gets it.
        other = await submit(clients, stack, user="u02", resource="g-budget", seconds=20)
        await wait_grant(clients, stack, other, status=common_pb2.GRANT_STATUS_ACTIVE)
    finally:
        await clients.close()


async def test_time_window_closed_refuses_the_request(stack: LapseStack) -> None:
    clients = StackClients(stack)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(clients, stack, user="u03", resource="g-window", seconds=20)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "flow 'flow-g-window' takes requests only during" in (refused.value.details() or "")
    finally:
        await clients.close()


async def test_extension_moves_the_expiry_once_then_is_refused(stack: LapseStack) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u04")
    try:
        request_id = await submit(clients, stack, user="u04", resource="g-extend", seconds=8)
        grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
        before = as_utc(grant.expires_at.ToDatetime())

        extended = run_cli(stack, "extend", request_id, "--for", "20s", token=stack.token("u04"))
        assert extended.returncode == 0, extended.stderr
        assert "extended by 20s (extension 1, 0 left)" in extended.stdout

        async def later_expiry() -> common_pb2.GrantStatus.ValueType:
            view = await clients.get_request(request_id, stack.token("u04"))
            moved = as_utc(view.grants[0].expires_at.ToDatetime())
            return common_pb2.GRANT_STATUS_ACTIVE if (moved - before).total_seconds() == 20 else 0

        await wait_for(later_expiry, bool, what="the expiry to move by 20 s")
        view = await clients.get_request(request_id, stack.token("u04"))
        assert view.grants[0].epoch > grant.epoch

        again = run_cli(stack, "extend", request_id, "--for", "10s", token=stack.token("u04"))
        assert again.returncode == 1 and "PERMISSION_DENIED" in again.stderr
        assert "allows 1 extension(s)" in again.stderr
        too_long = run_cli(stack, "extend", request_id, "--for", "5m", token=stack.token("u04"))
        assert too_long.returncode == 1

        # Still there after the original expiry; gone after the extended one.
        await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED)
        assert not await has_role(
            stack.infra.target_admin_dsn, login=login, role=stack.gated_role("g-extend")
        )
        revoked_at = as_utc(view.grants[0].expires_at.ToDatetime())
        assert (revoked_at - before).total_seconds() == 20
    finally:
        await clients.close()


async def test_an_extension_through_your_request_cannot_touch_another_persons_grant(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    try:
        mine = await submit(clients, stack, user="x01", resource="g-extend", seconds=60)
        theirs = await submit(clients, stack, user="x02", resource="g-extend", seconds=60)
        await wait_grant(clients, stack, mine, status=common_pb2.GRANT_STATUS_ACTIVE)
        their_grant = await wait_grant(
            clients, stack, theirs, status=common_pb2.GRANT_STATUS_ACTIVE
        )
        reached = run_cli(
            stack,
            "extend",
            mine,
            "--grant",
            their_grant.grant_id,
            "--for",
            "20s",
            token=stack.token("x01"),
        )
        assert reached.returncode == 1
        assert f"NOT_FOUND: request {mine} has no grant '{their_grant.grant_id}'" in (
            reached.stderr
        )
        view = await clients.get_request(theirs, stack.token("x02"))
        assert view.grants[0].expires_at == their_grant.expires_at
        # Their one extension is still theirs to use.
        own = run_cli(stack, "extend", theirs, "--for", "20s", token=stack.token("x02"))
        assert own.returncode == 0, own.stderr
        assert "extended by 20s (extension 1, 0 left)" in own.stdout
    finally:
        await clients.close()


async def test_invalid_flow_files_are_refused_whole(
    stack: LapseStack, tmp_path: pytest.TempPathFactory
) -> None:
    admin = stack.token("admin-1", roles=("admin",))
    broken = stack.workdir / "broken-flows.yaml"
    broken.write_text(
        stack.flows_file.read_text().replace(
            "mode: n_of_m, required: 2", "mode: n_of_m, required: 9", 1
        )
    )
    listed_before = run_cli(stack, "flows", "list", token=admin)
    checked = run_cli(stack, "flows", "validate", str(broken), token=admin)
    assert checked.returncode == 1
    assert (
        f"{broken}: flow 'flow-g-2of3': field approval: Value error, required 9 is more than the 3 approvers"
        in checked.stderr
    )
    applied = run_cli(stack, "flows", "apply", str(broken), token=admin)
    assert applied.returncode == 1 and "nothing was changed" in applied.stderr
    assert run_cli(stack, "flows", "list", token=admin).stdout == listed_before.stdout
    refused = run_cli(stack, "flows", "apply", str(stack.flows_file), token=stack.token("u01"))
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    # Validating describes the policy in force, so it needs admin too.
    peeked = run_cli(stack, "flows", "validate", str(stack.flows_file), token=stack.token("u01"))
    assert peeked.returncode == 1 and "validating Access Flows needs the admin role" in (
        peeked.stderr
    )


async def test_flow_file_aliases_are_refused_and_the_service_stays_responsive(
    stack: LapseStack,
) -> None:
    admin = stack.token("admin-1", roles=("admin",))
    laughs = stack.workdir / "laughs.yaml"
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{name}: &{name} [{', '.join([f'*{below}'] * 10)}]"
        for below, name in zip("abcde", "bcdef", strict=True)
    ]
    laughs.write_text(
        "\n".join(levels)
        + "\nflows:\n  - {name: boom, requestors: {users: *f}, approval: {mode: auto},"
        + " targets: [{integration: demo-pg, resources: *f, permissions: *f}]}\n"
    )
    checked = run_cli(stack, "flows", "validate", str(laughs), token=admin)
    assert checked.returncode == 1
    assert "YAML anchors and aliases (&name, *name) are not allowed" in checked.stderr
    assert len(checked.stderr) < 1000
    # The flows in force are untouched and the service answers at once.
    assert run_cli(stack, "flows", "list", token=admin).returncode == 0


async def test_dropping_a_requestor_revokes_their_grant_and_rejects_their_pending_request(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    admin = stack.token("admin-1", roles=("admin",))
    login = stack.login_for("u05")
    original = stack.flows_file.read_text()
    edited = stack.workdir / "flows-without-u05.yaml"
    edited.write_text(
        original.replace("requestors: {users: [u05, u06]}", "requestors: {users: [u06]}")
    )
    try:
        active = await submit(clients, stack, user="u05", resource="g-policy", seconds=600)
        await wait_grant(clients, stack, active, status=common_pb2.GRANT_STATUS_ACTIVE)
        assert await has_role(
            stack.infra.target_admin_dsn, login=login, role=stack.gated_role("g-policy")
        )
        pending = await submit(clients, stack, user="u05", resource="g-policy-gated", seconds=600)
        channel = stack.aio_channel("approval")
        approvals = approval_service_pb2_grpc.ApprovalServiceStub(channel)
        await wait_for(
            lambda: approvals.ListPendingApprovals(
                approval_service_pb2.ListPendingApprovalsRequest(),
                metadata=bearer(stack.token("approver-a")),
            ),
            lambda r: any(p.request_id == pending for p in r.approvals),
            what="the gated request in approver-a's inbox",
        )
        await channel.close()

        applied = run_cli(stack, "flows", "apply", str(edited), token=admin)
        assert applied.returncode == 0, applied.stderr
        assert "pending requests rejected: 1" in applied.stdout
        assert "approvals withdrawn (grants revoked): 1" in applied.stdout

        revoked = await wait_grant(clients, stack, active, status=common_pb2.GRANT_STATUS_REVOKED)
        assert revoked.history[-1].reason == common_pb2.REASON_POLICY_CHANGE
        assert not await has_role(
            stack.infra.target_admin_dsn, login=login, role=stack.gated_role("g-policy")
        )
        await wait_for(
            lambda: clients.get_request(pending, stack.token("u05")),
            lambda v: v.status == common_pb2.REQUEST_STATUS_REJECTED,
            what="the pending request REJECTED",
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(clients, stack, user="u05", resource="g-policy", seconds=60)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        restored = run_cli(stack, "flows", "apply", str(stack.flows_file), token=admin)
        assert restored.returncode == 0, restored.stderr
        await clients.close()


async def test_requester_revokes_own_grant_early_and_nobody_elses(stack: LapseStack) -> None:
    clients = StackClients(stack)
    login = stack.login_for("u06")
    try:
        request_id = await submit(clients, stack, user="u06", resource="r15", seconds=600)
        grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
        other = run_cli(stack, "revoke", grant.grant_id, token=stack.token("u07"))
        assert other.returncode == 1 and "PERMISSION_DENIED" in other.stderr

        own = run_cli(
            stack, "revoke", request_id, "--reason", "done early", token=stack.token("u06")
        )
        assert own.returncode == 0, own.stderr
        revoked = await wait_grant(
            clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED
        )
        assert revoked.history[-1].reason == common_pb2.REASON_USER
        assert not await has_role(
            stack.infra.target_admin_dsn, login=login, role=stack.bulk_role(15)
        )
        again = run_cli(stack, "revoke", grant.grant_id, token=stack.token("u06"))
        assert again.returncode == 1 and "only ACTIVE access can be revoked" in again.stderr
    finally:
        await clients.close()


async def test_extension_that_needs_approval_waits_for_the_approvers(stack: LapseStack) -> None:
    clients = StackClients(stack)
    user, approver = "u08", stack.token("approver-a", groups=())
    try:
        request_id = await submit(clients, stack, user=user, resource="g-ext-approval", seconds=40)
        await wait_for(
            lambda: pending_approvals(stack, "approver-a"),
            lambda pending: any(p.request_id == request_id for p in pending),
            what="the request to reach approver-a",
        )
        approved = run_cli(stack, "approve", request_id, token=approver)
        assert approved.returncode == 0, approved.stderr
        grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
        before = as_utc(grant.expires_at.ToDatetime())

        asked = run_cli(stack, "extend", request_id, "--for", "30s", token=stack.token(user))
        assert asked.returncode == 0, asked.stderr
        assert "waiting for approval as ext-" in asked.stdout
        extension_id = asked.stdout.split("waiting for approval as ", 1)[1].split()[0]
        # A second ask while the first waits is refused; the expiry has not moved.
        again = run_cli(stack, "extend", request_id, "--for", "30s", token=stack.token(user))
        assert again.returncode == 1 and "still waiting for approval" in again.stderr
        view = await clients.get_request(request_id, stack.token(user))
        assert as_utc(view.grants[0].expires_at.ToDatetime()) == before

        pending = {p.request_id: p for p in await pending_approvals(stack, "approver-a")}
        assert pending[extension_id].grant_id == grant.grant_id
        assert pending[extension_id].extends_request_id == request_id
        assert pending[extension_id].extend_by_seconds == 30
        # The requester cannot approve their own extension.
        own = run_cli(stack, "approve", extension_id, token=stack.token(user))
        assert own.returncode == 1
        yes = run_cli(stack, "approve", extension_id, token=approver)
        assert yes.returncode == 0, yes.stderr

        async def expiry() -> float:
            current = await clients.get_request(request_id, stack.token(user))
            return (as_utc(current.grants[0].expires_at.ToDatetime()) - before).total_seconds()

        await wait_for(expiry, lambda moved: moved == 30, what="the expiry to move")

        # The second extension is rejected by the approver: the expiry stays where it is.
        asked = run_cli(stack, "extend", request_id, "--for", "30s", token=stack.token(user))
        assert asked.returncode == 0, asked.stderr
        second = asked.stdout.split("waiting for approval as ", 1)[1].split()[0]
        no = run_cli(stack, "reject", second, "--reason", "wrap up now", token=approver)
        assert no.returncode == 0, no.stderr
        await wait_for(
            lambda: pending_approvals(stack, "approver-a"),
            lambda listed: all(p.request_id != second for p in listed),
            what="the rejected extension to leave the queue",
        )
        assert await expiry() == 30
    finally:
        run_cli(stack, "revoke", request_id, token=stack.token(user))
        await clients.close()


async def test_groups_from_the_directory_file_count_for_requestors_and_approvers(
    stack: LapseStack,
) -> None:
    """u07 and approver-d carry no groups in their tokens; the directory file puts them in
    `contractors` and `db-approvers`, the groups flow-g-dir names."""
    clients = StackClients(stack)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit(clients, stack, user="u09", resource="g-dir", seconds=30, groups=())
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        request_id = await submit(
            clients, stack, user="u07", resource="g-dir", seconds=30, groups=()
        )
        await wait_for(
            lambda: pending_approvals(stack, "approver-d"),
            lambda pending: any(p.request_id == request_id for p in pending),
            what="approver-d (a directory member of db-approvers) to see it",
        )
        assert all(p.request_id != request_id for p in await pending_approvals(stack, "approver-e"))
        approved = run_cli(stack, "approve", request_id, token=stack.token("approver-d", groups=()))
        assert approved.returncode == 0, approved.stderr
        await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
        assert await has_role(
            stack.infra.target_admin_dsn,
            login=stack.login_for("u07"),
            role=stack.gated_role("g-dir"),
        )
    finally:
        await clients.close()
