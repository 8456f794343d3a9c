"""How late are revocations, and does a dead agent make other agents' revocations later?

Runs the whole system (every service and two agents as processes, on the real Kafka broker
and PostgreSQL that deploy/local/ starts) and measures, per scenario:

- request -> ACTIVE: from SubmitRequest to the agent's confirmed grant, one request at a time;
- revocation lateness: when the agent had removed the access and read the target back (its
  verified revoke result's completed_at) minus the grant's expiry, for a
  batch of grants on the healthy agent that all fall due together, once with every agent up
  and once with the second agent killed while its own grants fall due at the same moment.

    uv run python benchmarks/revocation_lateness.py [--grants 100] [--rounds 1]

Prints figures; asserts nothing. Lateness includes the scheduler's claim, the revoker, two
Kafka hops and the agent's REVOKE + read-back in PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lapse_common.clock import as_utc  # noqa: E402
from lapse_common.messaging.codec import decode  # noqa: E402
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2  # noqa: E402

from benchmarks.peers.processes import process_cpu_seconds  # noqa: E402
from tests.infrastructure import provide_infrastructure  # noqa: E402
from tests.integration.clients import StackClients  # noqa: E402
from tests.integration.kafka_records import read_all  # noqa: E402
from tests.integration.revocation_support import (  # noqa: E402
    lifetime_after_setup,
    percentile,
    revocation_lateness,
    submit,
    verified_revokes,
    wait_all,
    wait_grant,
)
from tests.integration.waiting import wait_for  # noqa: E402
from tests.stack import LapseStack  # noqa: E402

USERS = tuple(f"u{i:02d}" for i in range(10))


def describe(values: list[float]) -> str:
    return (
        f"n={len(values):<4} p50 {percentile(values, 0.5) * 1000:7.1f} ms  "
        f"p95 {percentile(values, 0.95) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms  "
        f"mean {statistics.fmean(values) * 1000:7.1f} ms"
    )


async def request_to_active(clients: StackClients, stack: LapseStack, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        request_id = await submit(clients, stack, user="alice", seconds=2)
        await wait_grant(
            clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE, or_later=True
        )
        timings.append(time.perf_counter() - started)
        await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED)
    return timings


async def wait_verified(stack: LapseStack, grant_ids: list[str]) -> None:
    await wait_for(
        lambda: verified_revokes(stack),
        lambda removed: set(grant_ids) <= set(removed),
        what=f"{len(grant_ids)} verified revokes",
        progress=len,
        interval=0.5,
    )


async def claim_lateness(
    stack: LapseStack, grants: list[request_service_pb2.GrantView]
) -> list[float]:
    """Seconds from each grant's expiry to the grant-scheduler's claim (when it wrote the
    REVOKING fact), read from lapse.grants.v1: the first stage of the lateness."""
    claimed: dict[str, datetime] = {}
    for record in await read_all(stack.observer, stack.topic_prefix + "lapse.grants.v1"):
        event = decode(record.value)
        fact = event.payload
        if (
            isinstance(fact, events_pb2.GrantStatusChanged)
            and fact.status == common_pb2.GRANT_STATUS_REVOKING
        ):
            at = as_utc(event.envelope.occurred_at.ToDatetime())
            claimed[fact.grant_id] = min(at, claimed.get(fact.grant_id, at))
    return [
        (claimed[g.grant_id] - as_utc(g.expires_at.ToDatetime())).total_seconds() for g in grants
    ]


def cpu_seconds(stack: LapseStack) -> dict[str, float]:
    """CPU used so far by Lapse's processes (every service and agent), the Kafka broker and
    the PostgreSQL server (all its processes: the machine runs nothing else on it)."""
    # Keyed by name and pid: a process restarted in the window counts from zero.
    lapse = {
        f"{name}:{p.process.pid}": process_cpu_seconds(p.process.pid)
        for name, p in stack.processes.items()
        if p.process is not None
    }
    kafka = sum(process_cpu_seconds(pid) for pid in _pids_of("kafka.Kafka"))
    postgres = sum(process_cpu_seconds(pid) for pid in _pids_of("postgres"))
    return {**lapse, "kafka": kafka, "postgres": postgres}


def _pids_of(command_part: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if command_part in command:
                pids.append(int(entry.name))
    return pids


def cpu_per_revocation(before: dict[str, float], after: dict[str, float], count: int) -> str:
    per = {part: (after[part] - before.get(part, 0.0)) * 1000 / count for part in after}
    lapse: dict[str, float] = {}
    for part, ms in per.items():
        if part not in ("kafka", "postgres"):
            name = part.split(":")[0]
            lapse[name] = lapse.get(name, 0.0) + ms
    parts = ", ".join(f"{part} {ms:.0f}" for part, ms in sorted(lapse.items(), key=lambda x: -x[1]))
    return (
        f"CPU per revocation {sum(per.values()):.0f} ms: Lapse {sum(lapse.values()):.0f}"
        f" ({parts}) + Kafka {per['kafka']:.0f} + PostgreSQL {per['postgres']:.0f}"
    )


async def batch_lateness(
    clients: StackClients, stack: LapseStack, *, grants: int, far_down: bool, seconds: int
) -> tuple[list[float], list[float], float, str]:
    """Lateness of the healthy agent's revocations in one batch, the part of it before the
    grant-scheduler claimed each (expiry -> REVOKING), how long granting the batch took, and
    the CPU the revocations took (from just before the first fell due to the last)."""
    started = time.perf_counter()
    per_user = max(1, grants // len(USERS))
    healthy = await asyncio.gather(
        *(
            submit(clients, stack, user=user, resource=f"r{index:02d}", seconds=seconds)
            for user in USERS
            for index in range(per_user)
        )
    )
    far = await asyncio.gather(
        *(
            submit(clients, stack, user=u, integration="far-pg", resource="fardb", seconds=seconds)
            for u in USERS
        )
    )
    # ACTIVE or later: if granting outlasted the lifetime, the first are revoked already.
    active = await wait_all(
        clients, stack, [*healthy, *far], status=common_pb2.GRANT_STATUS_ACTIVE, or_later=True
    )
    granted_in = time.perf_counter() - started
    first_due = min(as_utc(g.expires_at.ToDatetime()) for g in active)
    await asyncio.sleep(max(0.0, (first_due - datetime.now(UTC)).total_seconds() - 0.5))
    cpu_before = cpu_seconds(stack)
    if far_down:
        stack.processes["far-agent"].kill(signal.SIGKILL)
    # Watched on the results topic, not the Activity view: polling Lapse would add to the
    # CPU measured for the revocations.
    await wait_verified(stack, [g.grant_id for g in active[: len(healthy)]])
    if far_down:
        stack.restart("far-agent")
    # Let the far agent's revocations finish (or retry) before the next round reuses roles.
    await wait_verified(stack, [g.grant_id for g in active[len(healthy) :]])
    cpu = cpu_per_revocation(cpu_before, cpu_seconds(stack), len(healthy) + len(far))
    revoked = await wait_all(clients, stack, healthy, status=common_pb2.GRANT_STATUS_REVOKED)
    await wait_all(clients, stack, far, status=common_pb2.GRANT_STATUS_REVOKED)
    claimed = await claim_lateness(stack, revoked)
    return await revocation_lateness(stack, revoked), claimed, granted_in, cpu


async def measure(stack: LapseStack, *, grants: int, rounds: int) -> None:
    clients = StackClients(stack)
    try:
        print(
            "request -> ACTIVE (sequential):      ",
            describe(await request_to_active(clients, stack, 20)),
        )
        # A warm-up batch, not reported: it measures how long granting a batch takes on this
        # machine now, so each measured batch's lifetimes start after its setup is done and
        # its grants fall due close together, on a slow machine as on a fast one.
        _, _, granted_in, _ = await batch_lateness(
            clients, stack, grants=grants, far_down=False, seconds=15
        )
        for round_number in range(1, rounds + 1):
            for far_down in (False, True):
                seconds = lifetime_after_setup(granted_in, at_least=15)
                values, claimed, granted_in, cpu = await batch_lateness(
                    clients, stack, grants=grants, far_down=far_down, seconds=seconds
                )
                label = "far-agent dead" if far_down else "all agents up "
                print(
                    f"round {round_number} lateness, {label}:      ",
                    describe(values),
                    f" (of it before the claim: p50 {percentile(claimed, 0.5) * 1000:.0f} ms;"
                    f" granted in {granted_in:.1f}s, lifetime {seconds}s; {cpu})",
                    flush=True,
                )
    finally:
        await clients.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--grants", type=int, default=100, help="grants on the healthy agent per batch (<= 200)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--consumer-batch-size",
        type=int,
        default=None,
        help="records each consumer takes at once (LAPSE_KAFKA_CONSUMER_BATCH_SIZE; default:"
        " the services' own)",
    )
    options = parser.parse_args()
    if not 10 <= options.grants <= 200:
        parser.error("--grants must be between 10 and 200")
    with tempfile.TemporaryDirectory() as workdir:
        stack = LapseStack(
            infra=provide_infrastructure(),
            workdir=Path(workdir),
            users=("alice", *USERS),
            bulk_resources=20,
            far_agent=True,
            # Retries fast enough that the far agent's grants get revoked after it returns.
            extra_env={
                "LAPSE_REVOKER_ACK_DEADLINE_SECONDS": "3",
                "LAPSE_REVOKER_BACKOFF_INITIAL_SECONDS": "1",
                **(
                    {"LAPSE_KAFKA_CONSUMER_BATCH_SIZE": str(options.consumer_batch_size)}
                    if options.consumer_batch_size
                    else {}
                ),
            },
        )
        stack.prepare()
        asyncio.run(stack.provision_kafka())
        asyncio.run(stack.create_databases())
        print("starting every service and two agents ...", flush=True)
        try:
            stack.start_all()
            asyncio.run(measure(stack, grants=options.grants, rounds=options.rounds))
        finally:
            stack.stop_all()
            asyncio.run(stack.drop_databases())


if __name__ == "__main__":
    main()
