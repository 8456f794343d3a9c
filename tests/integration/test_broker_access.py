"""The broker itself refuses what a principal is not allowed: no credential, no
connection; an agent's credential reads only its own commands and writes only results and
heartbeats; nobody but the admin creates topics. The live ACLs are the README's table."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.protocol.fetch import FetchRequest
from lapse_common.kafka_admin import principals as plan
from lapse_common.kafka_admin.admin_requests import Acl, describe_acls
from lapse_common.kafka_admin.provisioning import admin_client
from lapse_common.messaging.kafka_security import aiokafka_security_options
from lapse_common.settings import KafkaSettings

from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]

README = Path(__file__).resolve().parents[2] / "README.md"
AGENT = "lapse-agent-demo-agent"


async def produce(kafka: KafkaSettings, topic: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        request_timeout_ms=10_000,
        **aiokafka_security_options(kafka),
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x", key=b"k")
    finally:
        await producer.stop()


async def consume(kafka: KafkaSettings, topic: str) -> None:
    """Read the topic's first partition from the beginning (nothing need be on it)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        **aiokafka_security_options(kafka),
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.getmany(partition, timeout_ms=2_000)
    finally:
        await consumer.stop()


async def read_refusal(kafka: KafkaSettings, topic: str) -> str:
    """What the broker answers this principal's fetch of `topic` partition 0: the error's
    name, or "" if it may read. (aiokafka's consumer only logs a refusal and waits, so this
    sends the Fetch request itself.)"""
    async with admin_client(kafka) as client:
        connection = client._client
        fetch = FetchRequest(
            max_wait_time=100,
            min_bytes=1,
            max_bytes=1024,
            isolation_level=0,
            topics=[(topic, [(0, 0, 1024)])],
        )
        response = await connection.send(connection.get_random_node(), fetch)
    [(_, [partition, *_])] = response.topics
    code = partition[1]
    return "" if code == 0 else for_code(code).__name__


async def test_a_client_without_credentials_or_with_a_wrong_password_cannot_connect(
    stack: LapseStack, tmp_path: Path
) -> None:
    admin = stack.observer
    plaintext = admin.model_copy(update={"security_protocol": "PLAINTEXT", "allow_plaintext": True})
    with pytest.raises(KafkaError):  # the TLS listener does not speak plain Kafka
        await produce(plaintext, stack.topic_prefix + "lapse.decisions.v1")

    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    guessing = stack.kafka_as(AGENT).model_copy(update={"password_file": wrong})
    client = AIOKafkaAdminClient(
        bootstrap_servers=guessing.bootstrap_servers, **aiokafka_security_options(guessing)
    )
    with pytest.raises((KafkaConnectionError, KafkaError)) as refused:
        await client.start()
    await client.close()
    print(f"\n[broker-access] wrong password: {refused.value!r}")


async def test_an_agent_credential_reads_only_its_commands_and_writes_only_results(
    stack: LapseStack,
) -> None:
    demo = stack.kafka_as(AGENT)
    prefix = stack.topic_prefix

    # Its own topics work: the refusals below are about rights, not a broken credential.
    await consume(demo, prefix + "lapse.agent.demo-agent.commands.v1")
    await produce(demo, prefix + "lapse.agent-heartbeats.v1")

    assert await read_refusal(demo, prefix + "lapse.agent.demo-agent.commands.v1") == ""
    for topic in (
        "lapse.agent.far-agent.commands.v1",
        "lapse.decisions.v1",
        "lapse.grants.v1",
        "lapse.revoke-requests.v1",
        "lapse.agent-results.v1",
    ):
        assert await read_refusal(demo, prefix + topic) == "TopicAuthorizationFailedError", topic
    for topic in (
        "lapse.decisions.v1",
        "lapse.revoke-requests.v1",
        "lapse.grants.v1",
        "lapse.agent.far-agent.commands.v1",
        "lapse.access-events.v1",
    ):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(demo, prefix + topic)

    # An access-event producer may send access events and nothing else.
    offboarding = stack.kafka_as("lapse-producer-hr-offboarding")
    await produce(offboarding, prefix + "lapse.access-events.v1")
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(offboarding, prefix + "lapse.revoke-requests.v1")


@pytest.mark.parametrize("principal", [AGENT, "lapse-revoker", "lapse-producer-ci-pipelines"])
async def test_nobody_but_the_admin_creates_a_topic(stack: LapseStack, principal: str) -> None:
    name = f"{stack.topic_prefix}lapse.agent.intruder-{uuid.uuid4().hex[:6]}.commands.v1"
    async with admin_client(stack.kafka_as(principal)) as client:
        response = await client.create_topics([NewTopic(name, 1, 1)])
    [(topic, code, *_)] = response.topic_errors
    assert topic == name
    assert for_code(code).__name__ in {
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
    }, for_code(code)
    async with admin_client(stack.observer) as client:
        assert name not in await client.list_topics()


def readme_rules(stack: LapseStack) -> dict[str, set[Acl]]:
    """The README's table of principals, as ACLs for this stack's principals."""
    section = README.read_text().split("### Kafka principals and ACLs", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `lapse-")]
    assert rows, "the README has no table of Kafka principals"
    installation = stack.kafka.installation
    rules: dict[str, set[Acl]] = {}
    for row in rows:
        cells = [re.findall(r"`([^`]+)`", cell) for cell in row.strip("|").split("|")]
        [name], reads, writes, groups = cells
        names = [name]
        if "<id>" in name:
            names = [name.replace("<id>", agent) for agent in installation.agents]
        elif "<name>" in name:
            names = [name.replace("<name>", p) for p in installation.producers]
        for concrete in names:
            who = concrete.removeprefix("lapse-agent-").removeprefix("lapse-producer-")

            def fill(items: list[str], who: str = who) -> tuple[str, ...]:
                return tuple(i.replace("<id>", who).replace("<name>", who) for i in items)

            principal = plan.Principal(concrete, fill(reads), fill(writes), fill(groups))
            rules[installation.user(principal)] = set(installation.acls(principal))
    return rules


async def test_the_live_acls_are_the_readme_table(stack: LapseStack) -> None:
    documented = readme_rules(stack)
    expected = {p.name for p in stack.kafka.installation.principals()}
    assert {user.removeprefix(stack.topic_prefix) for user in documented} == expected
    async with admin_client(stack.observer) as client:
        for user, rules in documented.items():
            live = set(await describe_acls(client, f"User:{user}"))
            assert live == rules, (
                f"{user}: on the broker but not in the README: "
                f"{sorted(a.describe() for a in live - rules)}; "
                f"in the README but not on the broker: {sorted(a.describe() for a in rules - live)}"
            )
    print(f"\n[broker-access] {len(documented)} principals' live ACLs match the README")
