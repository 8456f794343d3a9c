"""A grant is never left behind: when the agent does not answer a grant command within its
ack deadline, Lapse gives up on it and says so (GRANT_FAILED); when the agent executes the
command later after all, the access is revoked at once and the grant's history says why.

On a stack of its own with a 4-second grant ack deadline (the command itself stays valid
for the default 10 minutes, as a slow or partitioned agent may still run it)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lapse_common.pb.lapse.v1 import common_pb2

from tests.conftest import running_stack
from tests.infrastructure import Infrastructure
from tests.integration.clients import StackClients, has_role
from tests.integration.revocation_support import submit, wait_grant
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def late_stack(
    infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LapseStack]:
    yield from running_stack(
        LapseStack(
            infra=infra,
            workdir=Path(tmp_path_factory.mktemp("late")),
            users=("alice", "bob"),
            extra_env={"LAPSE_SCHEDULER_GRANT_ACK_DEADLINE_SECONDS": "4"},
        )
    )


async def test_a_grant_executed_after_lapse_gave_up_on_it_is_revoked_at_once(
    late_stack: LapseStack,
) -> None:
    stack = late_stack
    clients = StackClients(stack)
    agent = stack.processes["agent"]
    login = stack.login_for("alice")
    try:
        agent.kill(signal.SIGKILL)
        request_id = await submit(clients, stack, user="alice", seconds=600)
        failed = await wait_grant(
            clients, stack, request_id, status=common_pb2.GRANT_STATUS_GRANT_FAILED
        )
        assert "did not answer the grant command within 4s" in failed.history[-1].detail
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)

        # The agent comes back and runs the command it still finds on its topic.
        back = time.monotonic()
        stack.restart("agent")
        revoked = await wait_grant(
            clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED
        )
        took = time.monotonic() - back
        statuses = [step.status for step in revoked.history]
        assert statuses[:2] == ["GRANTING", "GRANT_FAILED"], statuses
        late = [step for step in revoked.history if step.detail.startswith("late grant:")]
        assert late and late[0].status == "REVOKING", statuses
        assert late[0].reason == common_pb2.REASON_LATE_GRANT, late[0]
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
        print(
            f"\n[late-grant] agent back -> late grant revoked in {took:.1f}s; history: "
            + " -> ".join(statuses)
        )
    finally:
        if agent.process is None or agent.process.poll() is not None:
            stack.restart("agent")
        await clients.close()
