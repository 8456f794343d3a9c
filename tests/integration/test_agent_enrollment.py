"""`lapse agents enroll | rotate-key | disable` end to end: an enrolled agent's Kafka
principal can do exactly an agent's part and its signed heartbeats make it show as online;
after rotation only the new key counts; once disabled its credential no longer connects and
what its key signs is refused."""

from __future__ import annotations

import asyncio
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from lapse_common.agent_reports import ReportSigner
from lapse_common.kafka_admin.admin_requests import describe_acls
from lapse_common.kafka_admin.provisioning import admin_client
from lapse_common.messaging.codec import build_envelope
from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.settings import KafkaSettings

from tests.integration.clients import run_cli
from tests.integration.kafka_records import publish_raw, read_payloads
from tests.integration.waiting import wait_for
from tests.kafka_principals import ADMIN
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]


def agent_env(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)


def key_bytes(path: Path) -> bytes:
    return path.read_bytes()


async def heartbeat(stack: LapseStack, kafka: KafkaSettings, key: bytes, agent_id: str) -> None:
    beat = events_pb2.AgentHeartbeat(agent_id=agent_id, integrations=["none"], version="test")
    beat.sent_at.FromDatetime(datetime.now(UTC))
    signed = ReportSigner(agent_id=agent_id, private_key_pem=key).sign(beat)
    envelope = build_envelope(signed, producer=f"agent:{agent_id}", occurred_at=datetime.now(UTC))
    await publish_raw(
        kafka,
        stack.topic_prefix + "lapse.agent-heartbeats.v1",
        value=envelope.SerializeToString(),
        key=agent_id.encode(),
    )


async def listed(stack: LapseStack) -> str:
    shown = await asyncio.to_thread(
        run_cli, stack, "agents", token=stack.token("ops", roles=("sre",))
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


async def quarantined(stack: LapseStack, agent_id: str) -> list[str]:
    records = await read_payloads(
        stack.observer, stack.topic_prefix + "lapse.quarantine.v1", events_pb2.QuarantinedMessage
    )
    return [
        q.reason
        for q in records
        if q.consumer == "revoker-heartbeats" and q.key == agent_id.encode()
    ]


async def test_enroll_rotate_and_disable_an_agent(stack: LapseStack, tmp_path: Path) -> None:
    agent_id = f"enrolled-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "agents"
    admin = stack.token("ops", roles=("admin",))
    # The Kafka super user's settings, which enrolling and disabling need.
    as_admin = stack.kafka_env(ADMIN)

    refused = run_cli(
        stack, "agents", "enroll", agent_id, "--out", str(out), token=stack.token("bob")
    )
    assert refused.returncode == 1, refused.stdout
    assert (
        "PERMISSION_DENIED" in refused.stderr and "needs one of the roles admin" in refused.stderr
    )

    enrolled = run_cli(
        stack, "agents", "enroll", agent_id, "--out", str(out), token=admin, extra_env=as_admin
    )
    assert enrolled.returncode == 0, enrolled.stderr
    # Enrolling again (say, after a failure half-way) changes nothing and succeeds.
    again = run_cli(
        stack, "agents", "enroll", agent_id, "--out", str(out), token=admin, extra_env=as_admin
    )
    assert again.returncode == 0, again.stderr
    env_file = out / f"{agent_id}.env"
    for secret in (
        env_file,
        out / f"{agent_id}.key",
        out / f"{stack.topic_prefix}lapse-agent-{agent_id}.password",
    ):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    env = agent_env(env_file)
    assert env["LAPSE_AGENT_AGENT_ID"] == agent_id
    assert env["LAPSE_KAFKA_USERNAME"] == f"{stack.topic_prefix}lapse-agent-{agent_id}"
    kafka = stack.observer.model_copy(
        update={
            "username": env["LAPSE_KAFKA_USERNAME"],
            "password_file": Path(env["LAPSE_KAFKA_PASSWORD_FILE"]),
        }
    )
    async with admin_client(stack.observer) as client:
        rules = await describe_acls(client, f"User:{env['LAPSE_KAFKA_USERNAME']}")
        assert (
            f"{stack.topic_prefix}lapse.agent.{agent_id}.commands.v1" in await client.list_topics()
        )
    assert {r.describe().split(" ", 1)[1] for r in rules} == {
        f"READ topic {stack.topic_prefix}lapse.agent.{agent_id}.commands.v1",
        f"READ group {stack.topic_prefix}lapse-agent-{agent_id}",
        f"WRITE topic {stack.topic_prefix}lapse.agent-results.v1",
        f"WRITE topic {stack.topic_prefix}lapse.agent-heartbeats.v1",
    }

    # Its own credential and key: it shows as online.
    key = Path(env["LAPSE_AGENT_SIGNING_KEY_FILE"])
    old_key = key_bytes(key)
    await heartbeat(stack, kafka, old_key, agent_id)
    await wait_for(
        lambda: listed(stack), lambda shown: agent_id in shown, what=f"{agent_id} listed"
    )

    rotated = run_cli(stack, "agents", "rotate-key", agent_id, "--out", str(out), token=admin)
    assert rotated.returncode == 0, rotated.stderr
    new_key = key_bytes(key)
    assert new_key != old_key
    await heartbeat(stack, kafka, old_key, agent_id)
    [reason] = await wait_for(lambda: quarantined(stack, agent_id), bool, what="old key refused")
    assert "but its enrolled key is" in reason

    disabled = run_cli(
        stack,
        "agents",
        "disable",
        agent_id,
        "--reason",
        "host lost",
        token=admin,
        extra_env=as_admin,
    )
    assert disabled.returncode == 0, disabled.stderr
    assert "Kafka credential and 4 ACLs removed" in disabled.stdout
    with pytest.raises(KafkaConnectionError):
        async with admin_client(kafka, timeout=5):
            pass
    # Even sent with another agent's credential, what its key signs no longer counts.
    await heartbeat(stack, stack.kafka_as("lapse-agent-demo-agent"), new_key, agent_id)
    reasons = await wait_for(
        lambda: quarantined(stack, agent_id), lambda r: len(r) >= 2, what="disabled agent refused"
    )
    assert "which is disabled" in reasons[-1]
