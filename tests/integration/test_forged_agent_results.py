"""Agent results and heartbeats that are unsigned, signed by a key not enrolled for that
agent, signed by another agent, replayed, or that answer no command Lapse sent are
quarantined with the reason and change nothing, neither in the target nor in Lapse's view,
and the real grant and the real revocation still happen on time.

The attacker holds the demo agent's Kafka credential (the strongest an agent has: it may
write results and heartbeats) and the public protobuf contracts; in some cases also an
agent's own signing key, as after a stolen agent host.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime

import pytest
from lapse_common.agent_reports import ReportSigner
from lapse_common.messaging.codec import build_envelope, decode
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2

from tests.integration.clients import StackClients, has_role, run_cli
from tests.integration.kafka_records import agent_report, publish_raw, read_all, read_payloads
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]

ACTIVE = common_pb2.GRANT_STATUS_ACTIVE
REVOKED = common_pb2.GRANT_STATUS_REVOKED
REVOKING = common_pb2.GRANT_STATUS_REVOKING


async def forge_result(stack: LapseStack, *, signed_by: str | None, **fields: object) -> None:
    """Publish an AgentResult with the demo agent's Kafka credential: unsigned
    (`signed_by=None`), or signed with the key of agent `signed_by` ("intruder": a key
    nobody enrolled, claiming to be the demo agent)."""
    result = events_pb2.AgentResult(**fields)  # type: ignore[arg-type]
    result.completed_at.FromDatetime(datetime.now(UTC))
    await forge_report(stack, result, signed_by=signed_by, topic="lapse.agent-results.v1")


async def forge_report(
    stack: LapseStack,
    report: events_pb2.AgentResult | events_pb2.AgentHeartbeat,
    *,
    signed_by: str | None,
    topic: str,
) -> None:
    payload: events_pb2.AgentResult | events_pb2.AgentHeartbeat | events_pb2.SignedAgentReport
    payload = report
    if signed_by is not None:
        key = stack.agent_key(signed_by)[0].read_bytes()
        payload = ReportSigner(agent_id=report.agent_id, private_key_pem=key).sign(report)
    key_of_record = report.grant_id if isinstance(report, events_pb2.AgentResult) else ""
    envelope = build_envelope(
        payload,
        producer=f"agent:{report.agent_id}",
        occurred_at=datetime.now(UTC),
        grant_id=key_of_record,
    )
    await publish_raw(
        stack.kafka_as("lapse-agent-demo-agent"),
        stack.topic_prefix + topic,
        value=envelope.SerializeToString(),
        key=(key_of_record or report.agent_id).encode(),
    )


async def quarantined_for(stack: LapseStack, key: str, *, consumer: str, count: int) -> list[str]:
    """The reasons `consumer` quarantined records keyed `key` (a grant id, or an agent id
    for heartbeats) for, once there are `count` of them."""

    async def reasons() -> list[str]:
        quarantined = await read_payloads(
            stack.observer,
            stack.topic_prefix + "lapse.quarantine.v1",
            events_pb2.QuarantinedMessage,
        )
        return [q.reason for q in quarantined if (q.consumer, q.key) == (consumer, key.encode())]

    return await wait_for(
        reasons,
        lambda found: len(found) >= count,
        what=f"{count} records keyed {key} quarantined by {consumer}",
    )


async def replay_genuine_result(stack: LapseStack, grant_id: str) -> None:
    """A result the agent really signed for this grant, sent again in a new envelope (a new
    event id, so the consumers' inbox does not recognise it)."""
    for record in await read_all(stack.observer, stack.topic_prefix + "lapse.agent-results.v1"):
        payload = decode(record.value).payload
        result = agent_report(payload, events_pb2.AgentResult)
        if result is not None and result.grant_id == grant_id:
            envelope = build_envelope(
                payload,
                producer="agent:demo-agent",
                occurred_at=datetime.now(UTC),
                grant_id=grant_id,
            )
            await publish_raw(
                stack.kafka_as("lapse-agent-demo-agent"),
                record.topic,
                value=envelope.SerializeToString(),
                key=grant_id.encode(),
            )
            return
    raise AssertionError(f"no genuine result of {grant_id} to replay")


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
        made_up = {"command_id": "cmd-made-up", "agent_id": "demo-agent", **forged}
        # Unsigned; signed with a key nobody enrolled; signed with the demo agent's own key
        # (as from a stolen agent host) but answering no command that was sent.
        await forge_result(stack, signed_by=None, **made_up)
        await forge_result(stack, signed_by="intruder", **made_up)
        await forge_result(stack, signed_by="demo-agent", **made_up)
        reasons = await quarantined_for(stack, grant.grant_id, consumer="revoker-results", count=3)
        assert any("unsigned lapse.v1.AgentResult" in r for r in reasons), reasons
        assert any("but its enrolled key is" in r for r in reasons), reasons
        assert any("answers no revoke command the revoker sent" in r for r in reasons), reasons

        # The agent dies; the expiry revoke is sent and waits for its answer.
        agent.kill(signal.SIGKILL)
        await wait_grant(clients, stack, request_id, status=REVOKING)
        real_command = await sent_revoke_command_id(stack, grant.grant_id)
        # Agent B (far-agent, with its own enrolled key) answers the command sent to A, and
        # a genuine old result of this grant comes again in a new envelope.
        await forge_result(
            stack,
            signed_by="far-agent",
            **{**made_up, "command_id": real_command, "agent_id": "far-agent"},
        )
        await replay_genuine_result(stack, grant.grant_id)
        reasons = await quarantined_for(stack, grant.grant_id, consumer="revoker-results", count=5)
        assert any("comes from agent 'far-agent', but its command was sent" in r for r in reasons)
        assert any(r.startswith("replay: ") for r in reasons), reasons

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
        await forge_result(
            stack, signed_by=None, command_id="cmd-made-up", agent_id="demo-agent", **forged
        )
        await forge_result(
            stack, signed_by="demo-agent", command_id="cmd-made-up", agent_id="demo-agent", **forged
        )
        await forge_result(
            stack, signed_by="far-agent", command_id="cmd-made-up", agent_id="far-agent", **forged
        )
        reasons = await quarantined_for(
            stack, granting.grant_id, consumer="grant-scheduler-results", count=3
        )
        assert sum("unsigned lapse.v1.AgentResult" in r for r in reasons) == 1, reasons
        assert sum("but the grant command sent was" in r for r in reasons) == 2, reasons
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


async def test_heartbeats_that_do_not_verify_do_not_make_an_agent_look_online(
    stack: LapseStack,
) -> None:
    """A heartbeat for an agent nobody enrolled, one signed with another agent's key and an
    unsigned one: each quarantined with the reason by every service that tracks liveness,
    and none of them puts an agent on `lapse agents`."""
    beats = {
        "ghost-agent": "intruder",  # enrolled nowhere
        "far-agent": "demo-agent",  # the far agent's name, the demo agent's key
        "far-agent-unsigned": None,
    }
    for agent_id, signer in beats.items():
        heartbeat = events_pb2.AgentHeartbeat(
            agent_id=agent_id.removesuffix("-unsigned"), integrations=["demo-pg"], version="x"
        )
        heartbeat.sent_at.FromDatetime(datetime.now(UTC))
        await forge_report(stack, heartbeat, signed_by=signer, topic="lapse.agent-heartbeats.v1")
    for consumer in ("revoker-heartbeats", "request-heartbeats"):
        ghost = await quarantined_for(stack, "ghost-agent", consumer=consumer, count=1)
        assert "which is not enrolled" in ghost[0], ghost
        far = await quarantined_for(stack, "far-agent", consumer=consumer, count=2)
        assert any("but its enrolled key is" in r for r in far), far
        assert any("unsigned lapse.v1.AgentHeartbeat" in r for r in far), far
    listed = run_cli(stack, "agents", "--json", token=stack.token("ops", roles=("sre",)))
    assert listed.returncode == 0, listed.stderr
    assert "ghost-agent" not in listed.stdout
