"""The agent as a real process (`python -m lapse_agent`) against real Kafka and a real
target PostgreSQL: signed commands in, AgentResults out, the role really granted and
revoked, duplicates and stale epochs harmless, garbage skipped, heartbeats sent.

Isolated by a unique topic prefix, agent id and throwaway target roles."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_common.agent_reports import AgentRegistry, key_id_of
from lapse_common.auth import ensure_keypair
from lapse_common.clock import SystemClock
from lapse_common.command_signing import CommandSigner
from lapse_common.kafka_admin.provisioning import Installation
from lapse_common.messaging.codec import build_envelope, decode
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2
from lapse_common.topics import Topics

from services.agent.tests.agent_commands import build_command
from services.agent.tests.integration.target_roles import (
    ScratchRoles,
    create_scratch_roles,
    direct_members,
    drop_scratch_roles,
)
from tests.infrastructure import provide_infrastructure
from tests.integration.kafka_records import publish_raw, read_all
from tests.integration.waiting import wait_for
from tests.kafka_principals import ADMIN, InstallationCredentials
from tests.stack import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GARBAGE = b"\x08\x96\x01 not a lapse envelope"
SUCCEEDED = events_pb2.RESULT_OUTCOME_SUCCEEDED
REJECTED = events_pb2.RESULT_OUTCOME_REJECTED
GRANT = common_pb2.COMMAND_KIND_GRANT
REVOKE = common_pb2.COMMAND_KIND_REVOKE


@dataclass
class RunningAgent:
    agent_id: str
    kafka: InstallationCredentials
    topics: Topics
    target_dsn: str
    roles: ScratchRoles
    signer: CommandSigner
    process: ServiceProcess
    # The agent's enrolled key, as the platform's services hold it.
    registry: AgentRegistry

    def command(
        self,
        *,
        kind: common_pb2.CommandKind.ValueType,
        grant_id: str,
        epoch: int = 1,
        agent_id: str | None = None,
        permission: str = "read",
    ) -> commands_pb2.AgentCommand:
        return build_command(
            kind=kind,
            grant_id=grant_id,
            epoch=epoch,
            agent_id=agent_id or self.agent_id,
            integration_id="demo-pg",
            resource="appdb",
            permission=permission,
            principal=self.roles.alice,
        )

    async def send(self, signed: commands_pb2.SignedCommand | bytes, *, grant_id: str) -> None:
        value = (
            signed
            if isinstance(signed, bytes)
            else build_envelope(
                signed,
                producer="test-platform",
                occurred_at=datetime.now(UTC),
                grant_id=grant_id,
            ).SerializeToString()
        )
        # Only the platform's grant-scheduler and revoker may write an agent's commands.
        await publish_raw(
            self.kafka.settings("lapse-revoker"),
            self.topics.agent_commands(self.agent_id),
            value=value,
            key=grant_id.encode(),
        )

    async def results_for(self, command_id: str, *, count: int = 1) -> list[events_pb2.AgentResult]:
        async def answers() -> list[events_pb2.AgentResult]:
            found = []
            for record in await read_all(self.kafka.settings(ADMIN), self.topics.agent_results):
                event = decode(record.value)
                # Signed with the agent's own key: what the platform verifies.
                result = await self.registry.verify(event.payload, events_pb2.AgentResult)
                if result.command_id == command_id:
                    assert record.key == result.grant_id.encode()
                    assert event.envelope.producer == f"agent:{self.agent_id}"
                    found.append(result)
            return found

        return await wait_for(
            answers,
            lambda found: len(found) >= count,
            what=f"{count} result(s) for {command_id}",
            progress=len,
            describe=lambda found: f"{len(found)} result(s)\n" + self.process.tail(80),
            interval=0.5,
        )


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[RunningAgent]:
    infra = await asyncio.to_thread(provide_infrastructure)
    run_id = uuid.uuid4().hex[:8]
    agent_id = f"it-agent-{run_id}"
    topics = Topics(prefix=f"it-agent-{run_id}.")
    kafka = InstallationCredentials(
        admin=infra.kafka_admin,
        installation=Installation(topic_prefix=topics.prefix, agents=(agent_id,)),
        credentials_dir=tmp_path / "kafka-credentials",
    )
    await kafka.provision()
    roles = await create_scratch_roles(infra.target_admin_dsn)
    signing_key, signing_public = ensure_keypair(tmp_path / "keys", "command-signing")
    agent_key, agent_public = ensure_keypair(tmp_path / "keys", "agent")
    registry = AgentRegistry.of(
        [
            events_pb2.AgentRegistrationChanged(
                agent_id=agent_id,
                change=events_pb2.AGENT_REGISTRATION_CHANGE_ENROLLED,
                key_id=key_id_of(agent_public.read_bytes()),
                public_key_pem=agent_public.read_text(),
            )
        ],
        clock=SystemClock(),
    )
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
integrations:
  - id: demo-pg
    kind: postgres
    dsn_env: LAPSE_IT_AGENT_TARGET_DSN
    resources:
      appdb:
        permissions:
          read: {roles.read}
          write: {roles.write}
"""
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("LAPSE_")}
    env.update(
        {
            "LAPSE_KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "LAPSE_KAFKA_TOPIC_PREFIX": topics.prefix,
            **kafka.env(f"lapse-agent-{agent_id}"),
            "LAPSE_AGENT_AGENT_ID": agent_id,
            "LAPSE_AGENT_CONFIG_FILE": str(config),
            "LAPSE_AGENT_COMMAND_PUBLIC_KEY_FILE": str(signing_public),
            "LAPSE_AGENT_SIGNING_KEY_FILE": str(agent_key),
            "LAPSE_AGENT_STATE_PATH": str(tmp_path / "state" / "agent.db"),
            "LAPSE_AGENT_HEARTBEAT_INTERVAL_SECONDS": "1",
            "LAPSE_IT_AGENT_TARGET_DSN": infra.target_admin_dsn,
        }
    )
    process = ServiceProcess("agent", "lapse_agent", env, tmp_path)
    process.start()
    try:
        await asyncio.to_thread(process.wait_ready)
        yield RunningAgent(
            agent_id=agent_id,
            kafka=kafka,
            topics=topics,
            target_dsn=infra.target_admin_dsn,
            roles=roles,
            signer=CommandSigner(
                private_key_pem=signing_key.read_bytes(),
                clock=SystemClock(),
                ttl=timedelta(minutes=10),
            ),
            process=process,
            registry=registry,
        )
    except BaseException:
        print(process.tail(120))
        raise
    finally:
        await asyncio.to_thread(process.stop)
        await drop_scratch_roles(infra.target_admin_dsn, roles)
        await kafka.delete_topics()


async def test_grant_duplicate_restart_revoke_and_stale_grant(agent: RunningAgent) -> None:
    roles = agent.roles
    grant = agent.command(kind=GRANT, grant_id="g-1", epoch=1)
    signed_grant = agent.signer.sign(grant)

    await agent.send(signed_grant, grant_id="g-1")
    [granted] = await agent.results_for(grant.command_id)
    assert (granted.outcome, granted.changed) == (SUCCEEDED, True), granted.detail
    assert granted.agent_id == agent.agent_id
    assert (granted.grant_id, granted.epoch, granted.kind) == ("g-1", 1, GRANT)
    assert await direct_members(agent.target_dsn, roles.read) == {roles.alice}

    # The same record delivered again: re-acknowledged, not executed again.
    await agent.send(signed_grant, grant_id="g-1")
    _, duplicate = await agent.results_for(grant.command_id, count=2)
    assert duplicate.outcome == SUCCEEDED
    assert duplicate.changed is False
    assert duplicate.detail.startswith("duplicate delivery")

    # SIGTERM: a clean exit; the ledger survives the restart.
    await asyncio.to_thread(agent.process.stop)
    assert agent.process.process is not None
    assert agent.process.process.returncode == 0, agent.process.tail(40)
    await asyncio.to_thread(agent.process.start)
    await asyncio.to_thread(agent.process.wait_ready)
    await agent.send(signed_grant, grant_id="g-1")
    *_, after_restart = await agent.results_for(grant.command_id, count=3)
    assert after_restart.detail.startswith("duplicate delivery")

    revoke = agent.command(kind=REVOKE, grant_id="g-1", epoch=2)
    await agent.send(agent.signer.sign(revoke), grant_id="g-1")
    [revoked] = await agent.results_for(revoke.command_id)
    assert (revoked.outcome, revoked.changed, revoked.verified) == (SUCCEEDED, True, True)
    assert await direct_members(agent.target_dsn, roles.read) == set()

    # A grant for the same grant id with an older epoch arrives late: must not run.
    late = agent.command(kind=GRANT, grant_id="g-1", epoch=1)
    await agent.send(agent.signer.sign(late), grant_id="g-1")
    [stale] = await agent.results_for(late.command_id)
    assert stale.outcome == REJECTED
    assert stale.detail == "stale epoch 1 < 2"
    assert await direct_members(agent.target_dsn, roles.read) == set()


async def test_forged_foreign_and_garbage_commands_do_nothing(agent: RunningAgent) -> None:
    forged = agent.signer.sign(agent.command(kind=GRANT, grant_id="g-forged"))
    forged.signature = bytes(64)
    await agent.send(forged, grant_id="g-forged")

    foreign = agent.command(kind=GRANT, grant_id="g-foreign", agent_id="some-other-agent")
    await agent.send(agent.signer.sign(foreign), grant_id="g-foreign")

    await agent.send(GARBAGE, grant_id="g-garbage")

    unknown = agent.command(kind=GRANT, grant_id="g-unknown", permission="admin")
    await agent.send(agent.signer.sign(unknown), grant_id="g-unknown")

    forged_command = commands_pb2.AgentCommand()
    forged_command.ParseFromString(forged.command)
    [forged_result] = await agent.results_for(forged_command.command_id)
    assert forged_result.outcome == REJECTED
    assert "signature does not verify" in forged_result.detail

    [foreign_result] = await agent.results_for(foreign.command_id)
    assert foreign_result.outcome == REJECTED
    assert "some-other-agent" in foreign_result.detail

    [unknown_result] = await agent.results_for(unknown.command_id)
    assert unknown_result.outcome == events_pb2.RESULT_OUTCOME_FAILED_PERMANENT
    assert "permission 'admin' is not configured" in unknown_result.detail

    assert await direct_members(agent.target_dsn, agent.roles.read) == set()

    # The garbage was skipped (an agent may not write the quarantine; audit, which reads
    # every command topic, quarantines it) and the command after it was still answered.
    assert "skipped undecodable record" in agent.process.tail(400)


async def test_heartbeats_name_the_agent_and_its_integrations(agent: RunningAgent) -> None:
    records = await wait_for(
        lambda: read_all(agent.kafka.settings(ADMIN), agent.topics.agent_heartbeats),
        lambda found: len(found) >= 2,
        what="two heartbeats",
        progress=len,
        describe=lambda _: agent.process.tail(60),
        interval=0.5,
    )
    beats = [
        await agent.registry.verify(decode(record.value).payload, events_pb2.AgentHeartbeat)
        for record in records
    ]
    assert all(record.key == agent.agent_id.encode() for record in records)
    beat = beats[-1]
    assert isinstance(beat, events_pb2.AgentHeartbeat)
    assert beat.agent_id == agent.agent_id
    assert list(beat.integrations) == ["demo-pg"]
    assert beat.version
