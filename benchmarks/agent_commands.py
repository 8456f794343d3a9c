"""How fast does one agent carry out commands, and what does each cost it and its target?

Starts the whole stack on the real Kafka broker and PostgreSQL that deploy/local/ starts,
then stops every service but the demo agent and plays the platform itself: it publishes
N signed GRANT commands for N different grants (user x bulk resource) at once to the agent's
command topic and waits until the agent's N results are on the results topic, then does the
same with the N REVOKE commands (each verified by the agent's read-back). Per agent setting
it prints commands/s, the latency of each result from the moment its command was published
(p50/p99/max), and CPU per command of the agent process and of the target's PostgreSQL
backends (the agent's connections).

Settings (`--settings`, comma-separated):
- one-by-one: LAPSE_KAFKA_CONSUMER_BATCH_SIZE=1 and max_concurrent_commands 1, which is
  how the agent worked before it took batches;
- batched: the defaults (batches of up to 50 records, 4 commands at once per integration);
- as-configured: neither setting touched, for an agent from an older checkout (copy this
  file there) that knows neither.

    uv run python benchmarks/agent_commands.py [--commands 400] [--settings one-by-one,batched]

Prints figures; asserts nothing. The platform's own services are stopped, so the figures are
the agent's alone: the whole system's are in revocation_lateness.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from lapse_common.clock import SystemClock  # noqa: E402
from lapse_common.command_signing import CommandSigner  # noqa: E402
from lapse_common.messaging.codec import build_envelope, decode  # noqa: E402
from lapse_common.messaging.kafka_security import aiokafka_security_options  # noqa: E402
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, events_pb2  # noqa: E402
from lapse_common.settings import KafkaSettings  # noqa: E402
from lapse_common.topics import Topics  # noqa: E402

from benchmarks.peers.processes import process_cpu_seconds  # noqa: E402
from tests.conftest import running_stack  # noqa: E402
from tests.infrastructure import provide_infrastructure  # noqa: E402
from tests.integration.revocation_support import percentile  # noqa: E402
from tests.stack import LapseStack  # noqa: E402

AGENT = "demo-agent"
INTEGRATION = "demo-pg"
SETTINGS: dict[str, dict[str, int]] = {
    "one-by-one": {"batch_size": 1, "max_concurrent_commands": 1},
    "batched": {"batch_size": 50, "max_concurrent_commands": 4},
    # The agent's config and settings as the stack writes them: what an older agent, which
    # knows neither setting, runs with (for a before/after from another checkout).
    "as-configured": {},
}


@dataclass(frozen=True)
class Round:
    setting: str
    kind: str
    commands: int
    seconds: float
    latencies: list[float]
    agent_cpu: float
    target_cpu: float


def target_backends_cpu(login: str) -> float:
    """CPU of the target PostgreSQL's backends serving `login` (their cmdline names it)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith("postgres: ") and f" {login} " in cmdline:
            total += process_cpu_seconds(int(entry.name))
    return total


def set_up_agent(stack: LapseStack, setting: str) -> None:
    """Restart the demo agent with `setting`; a fresh state file, so nothing is a repeat."""
    chosen = SETTINGS[setting]
    agent = stack.processes["agent"]
    agent.stop()
    agent.env = {
        **agent.env,
        "LAPSE_AGENT_STATE_PATH": str(stack.workdir / f"agent-state-{setting}.db"),
    }
    if chosen:
        config = yaml.safe_load(stack.agent_file.read_text())
        for integration in config["integrations"]:
            integration["max_concurrent_commands"] = chosen["max_concurrent_commands"]
        stack.agent_file.write_text(yaml.safe_dump(config, sort_keys=False))
        agent.env["LAPSE_KAFKA_CONSUMER_BATCH_SIZE"] = str(chosen["batch_size"])
    stack.restart("agent")


class Platform:
    """Publishes signed commands to the agent and reads its results, as the services would."""

    def __init__(self, stack: LapseStack) -> None:
        self.stack = stack
        self.signer = CommandSigner(
            private_key_pem=stack.signing_key.read_bytes(),
            clock=SystemClock(),
            ttl=timedelta(minutes=10),
        )
        topics = Topics(prefix=stack.topic_prefix)
        self.commands_topic = topics.agent_commands(AGENT)
        self.results_topic = topics.agent_results

    def _kafka(self, principal: str) -> KafkaSettings:
        return self.stack.kafka_as(principal)

    async def run(
        self, grants: list[tuple[str, str, str]], *, kind: common_pb2.CommandKind.ValueType
    ) -> tuple[float, list[float]]:
        """Send one command per (grant id, resource, login); seconds until the last result,
        and each result's latency from when its command was handed to Kafka."""
        observer = self.stack.observer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=observer.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            **aiokafka_security_options(observer),
        )
        scheduler = self._kafka("lapse-grant-scheduler")
        producer = AIOKafkaProducer(
            bootstrap_servers=scheduler.bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            **aiokafka_security_options(scheduler),
        )
        await consumer.start()
        await producer.start()
        try:
            partitions = [
                TopicPartition(self.results_topic, p)
                for p in consumer.partitions_for_topic(self.results_topic) or ()
            ]
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = [
                    TopicPartition(self.results_topic, p)
                    for p in consumer.partitions_for_topic(self.results_topic) or ()
                ]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)
            sent_at: dict[str, float] = {}
            started = time.monotonic()
            deliveries = []
            for grant_id, resource, login in grants:
                command_id = f"cmd-{uuid.uuid4()}"
                command = commands_pb2.AgentCommand(
                    command_id=command_id,
                    grant_id=grant_id,
                    epoch=1 if kind == common_pb2.COMMAND_KIND_GRANT else 2,
                    kind=kind,
                    spec=common_pb2.GrantSpec(
                        integration_id=INTEGRATION,
                        agent_id=AGENT,
                        resource=resource,
                        permission="read",
                        principal=login,
                    ),
                    issuer="benchmark",
                )
                envelope = build_envelope(
                    self.signer.sign(command),
                    producer="grant-scheduler",
                    occurred_at=SystemClock().now(),
                    grant_id=grant_id,
                )
                sent_at[command_id] = time.monotonic()
                deliveries.append(
                    await producer.send(
                        self.commands_topic,
                        value=envelope.SerializeToString(),
                        key=grant_id.encode(),
                        headers=[("lapse-type", envelope.type.encode())],
                    )
                )
            await asyncio.gather(*deliveries)
            latencies: dict[str, float] = {}
            last_progress = time.monotonic()
            while len(latencies) < len(grants):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        report = decode(record.value or b"").payload
                        if not isinstance(report, events_pb2.SignedAgentReport):
                            continue
                        result = events_pb2.AgentResult()
                        result.ParseFromString(report.report)
                        if result.command_id in sent_at and result.command_id not in latencies:
                            if result.outcome != events_pb2.RESULT_OUTCOME_SUCCEEDED:
                                raise RuntimeError(f"{result.command_id}: {result.detail}")
                            latencies[result.command_id] = (
                                time.monotonic() - sent_at[result.command_id]
                            )
                            last_progress = time.monotonic()
                if time.monotonic() - last_progress > 60:
                    raise RuntimeError(
                        f"no new result for 60 s: {len(latencies)} of {len(grants)} results"
                    )
            return time.monotonic() - started, list(latencies.values())
        finally:
            await producer.stop()
            await consumer.stop()


async def measure(stack: LapseStack, settings: list[str], commands: int) -> list[Round]:
    platform = Platform(stack)
    resources = [f"r{i:02d}" for i in range(stack.bulk_resources)]
    logins = [stack.login_for(user) for user in stack.users]
    pairs = [(resource, login) for resource in resources for login in logins][:commands]
    agent_login = "lapse_agent"
    rounds = []
    for setting in settings:
        set_up_agent(stack, setting)
        await asyncio.sleep(2)  # past the agent's start-up work
        grants = [(f"bench-{uuid.uuid4().hex[:12]}", r, login) for r, login in pairs]
        for kind, name in (
            (common_pb2.COMMAND_KIND_GRANT, "grant"),
            (common_pb2.COMMAND_KIND_REVOKE, "revoke"),
        ):
            agent_pid = stack.processes["agent"].process.pid  # type: ignore[union-attr]
            agent_before = process_cpu_seconds(agent_pid)
            target_before = target_backends_cpu(agent_login)
            seconds, latencies = await platform.run(grants, kind=kind)
            rounds.append(
                Round(
                    setting=setting,
                    kind=name,
                    commands=len(grants),
                    seconds=seconds,
                    latencies=latencies,
                    agent_cpu=process_cpu_seconds(agent_pid) - agent_before,
                    target_cpu=target_backends_cpu(agent_login) - target_before,
                )
            )
            print(f"  {setting} {name}: {len(grants)} in {seconds:.1f}s", flush=True)
    return rounds


def report(rounds: list[Round]) -> None:
    print()
    print(
        f"{'setting':<13} {'kind':<7} {'cmds':>5} {'cmds/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'agent ms/cmd':>13} {'target ms/cmd':>14}"
    )
    for r in rounds:
        print(
            f"{r.setting:<13} {r.kind:<7} {r.commands:>5} {r.commands / r.seconds:>7.1f} "
            f"{percentile(r.latencies, 0.5) * 1000:>8.0f} "
            f"{percentile(r.latencies, 0.99) * 1000:>8.0f} {max(r.latencies) * 1000:>8.0f} "
            f"{r.agent_cpu / r.commands * 1000:>13.2f} {r.target_cpu / r.commands * 1000:>14.2f}"
        )
    print(f"(mean latency per round: {[round(statistics.fmean(r.latencies), 2) for r in rounds]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=400, help="commands per round")
    parser.add_argument(
        "--settings",
        default="one-by-one,batched",
        help=f"comma-separated, of: {', '.join(SETTINGS)}",
    )
    args = parser.parse_args()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    if args.commands < 1:
        parser.error("--commands must be at least 1")
    users = 20
    resources = max(1, -(-args.commands // users))
    if resources > 100:
        parser.error("--commands: at most 2000 (20 users x 100 bulk resources)")
    with tempfile.TemporaryDirectory(prefix="lapse-agent-bench-") as workdir:
        stack = LapseStack(
            infra=provide_infrastructure(),
            workdir=Path(workdir),
            users=tuple(f"b{i:02d}" for i in range(users)),
            bulk_resources=resources,
        )
        print(f"starting the stack ({users} logins x {resources} roles in the target)...")
        stacked = running_stack(stack)
        next(stacked)
        try:
            for name, process in stack.processes.items():
                if name != "agent":
                    process.stop()
            rounds = asyncio.run(measure(stack, settings, args.commands))
        finally:
            for _ in stacked:
                pass
    report(rounds)


if __name__ == "__main__":
    main()
