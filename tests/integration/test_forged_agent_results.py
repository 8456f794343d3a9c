"""Agent results that answer no command Lapse sent are quarantined with the reason and
change nothing, neither in the target nor in Lapse's view, and the real grant and the real
revocation still happen on time.

The attacker here is anyone who can produce onto lapse.agent-results.v1 with the public
protobuf contracts: a made-up command id, or the right grant from the wrong agent.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import pytest
from lapse_common.messaging.codec import build_envelope
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from tests.integration.clients import StackClients, has_role
from tests.integration.kafka_records import publish_raw, read_payloads
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]

ACTIVE = common_pb2.GRANT_STATUS_ACTIVE
REVOKED = common_pb2.GRANT_STATUS_REVOKED
REVOKING = common_pb2.GRANT_STATUS_REVOKING


async def forge_result(stack: LapseStack, **fields: object) -> None:
    """Publish an AgentResult the way an attacker with the contracts and the demo agent's
    Kafka credential (the strongest an agent holds) would."""
    result = events_pb2.AgentResult(**fields)  # type: ignore[arg-type]
    result.completed_at.FromDatetime(datetime.now(UTC))
    envelope = build_envelope(
        result, producer="agent:demo-agent", occurred_at=datetime.now(UTC), grant_id=result.grant_id
    )
    await publish_raw(
        stack.kafka_as("lapse-agent-demo-agent"),
        stack.topic_prefix + "lapse.agent-results.v1",
        value=envelope.SerializeToString(),
        key=result.grant_id.encode(),
    )


async def quarantined_for(
    stack: LapseStack, grant_id: str, *, consumer: str, count: int
) -> list[str]:
    """The reasons `consumer` quarantined results about `grant_id` for, once there are
    `count` of them."""

    async def reasons() -> list[str]:
        quarantined = await read_payloads(
            stack.observer,
            stack.topic_prefix + "lapse.quarantine.v1",
            events_pb2.QuarantinedMessage,
        )
        return [
            q.reason for q in quarantined if (q.consumer, q.key) == (consumer, grant_id.encode())
        ]

    return await wait_for(
        reasons,
        lambda found: len(found) >= count,
        what=f"{count} results about {grant_id} quarantined by {consumer}",
    )


async def sent_revoke_command_id(stack: LapseStack, grant_id: str) -> str:
    """The id of the revoke command for `grant_id` on the agent's command topic, which an
    attacker who can read that topic sees too."""

    async def revoke_commands() -> list[str]:
        signed = await read_payloads(
            stack.kafka_as("lapse-agent-demo-agent"),
            stack.topic_prefix + "lapse.agent.demo-agent.commands.v1",
            commands_pb2.SignedCommand,
        )
        commands = [commands_pb2.AgentCommand.FromString(s.command) for s in signed]
        return [
            c.command_id
            for c in commands
            if (c.grant_id, c.kind) == (grant_id, common_pb2.COMMAND_KIND_REVOKE)
        ]

    return (await wait_for(revoke_commands, bool, what=f"the revoke command of {grant_id}"))[0]


async def test_forged_revoke_confirmations_leave_the_access_until_the_real_revoke(
    stack: LapseStack,
) -> None:
    """A verified "it is gone" that answers no revoke command sent, before the grant ends and
    while its revocation waits for a dead agent, ends nothing: the access stays in the
    target, Lapse keeps showing it, and the real revocation removes it once the agent is back.
    """
    clients = StackClients(stack)
    agent = stack.processes["agent"]
    login = stack.login_for("f01")
    try:
        request_id = await submit(clients, stack, user="f01", seconds=8)
        grant = await wait_grant(clients, stack, request_id, status=ACTIVE)
        forged: dict[str, object] = {
            "grant_id": grant.grant_id,
            # The epoch the expiry revoke will carry.
            "epoch": grant.epoch + 1,
            "kind": common_pb2.COMMAND_KIND_REVOKE,
            "outcome": events_pb2.RESULT_OUTCOME_SUCCEEDED,
            "changed": True,
            "verified": True,
            "detail": "removed (forged)",
        }
        await forge_result(stack, command_id="cmd-made-up", agent_id="demo-agent", **forged)
        await quarantined_for(stack, grant.grant_id, consumer="revoker-results", count=1)

        # The agent dies; the expiry revoke is sent and waits for its answer.
        agent.kill(signal.SIGKILL)
        await wait_grant(clients, stack, request_id, status=REVOKING)
        real_command = await sent_revoke_command_id(stack, grant.grant_id)
        await forge_result(stack, command_id="cmd-made-up", agent_id="demo-agent", **forged)
        await forge_result(stack, command_id=real_command, agent_id="far-agent", **forged)
        reasons = await quarantined_for(stack, grant.grant_id, consumer="revoker-results", count=3)
        assert sum("answers no revoke command the revoker sent" in r for r in reasons) == 2
        assert sum("comes from agent 'far-agent', but its command was sent" in r for r in reasons)

        # Nothing changed: still held in the target, still not REVOKED in Lapse's view.
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
        now = await wait_grant(clients, stack, request_id, status=REVOKING)
        assert "REVOKED" not in [s.status for s in now.history]

        # The real revocation removes it once the agent is back.
        stack.restart("agent")
        revoked = await wait_grant(clients, stack, request_id, status=REVOKED)
        assert "forged" not in revoked.history[-1].detail
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
    finally:
        if agent.process is None or agent.process.poll() is not None:
            stack.restart("agent")
        await clients.close()


async def test_forged_grant_failure_does_not_make_lapse_forget_a_pending_grant(
    stack: LapseStack,
) -> None:
    """While the agent is down, a forged GRANT FAILED must not mark the grant GRANT_FAILED:
    the agent executes the still-valid command when it is back, and Lapse must then know
    about the access and take it away on time."""
    clients = StackClients(stack)
    agent = stack.processes["agent"]
    login = stack.login_for("f02")
    try:
        agent.kill(signal.SIGKILL)
        request_id = await submit(clients, stack, user="f02", seconds=10)
        granting = await wait_grant(
            clients, stack, request_id, status=common_pb2.GRANT_STATUS_GRANTING
        )
        forged = {
            "grant_id": granting.grant_id,
            "epoch": granting.epoch,
            "kind": common_pb2.COMMAND_KIND_GRANT,
            "outcome": events_pb2.RESULT_OUTCOME_FAILED_PERMANENT,
            "detail": "login does not exist (forged)",
        }
        await forge_result(stack, command_id="cmd-made-up", agent_id="demo-agent", **forged)
        await forge_result(stack, command_id="cmd-made-up", agent_id="far-agent", **forged)
        reasons = await quarantined_for(
            stack, granting.grant_id, consumer="grant-scheduler-results", count=2
        )
        assert all("but the grant command sent was" in r for r in reasons), reasons
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)

        stack.restart("agent")
        active = await wait_grant(clients, stack, request_id, status=ACTIVE)
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
        revoked = await wait_grant(clients, stack, request_id, status=REVOKED)
        assert [s.status for s in revoked.history][:2] == ["GRANTING", "ACTIVE"]
        assert "GRANT_FAILED" not in [s.status for s in revoked.history]
        assert active.grant_id == revoked.grant_id
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)
    finally:
        if agent.process is None or agent.process.poll() is not None:
            stack.restart("agent")
        await clients.close()
