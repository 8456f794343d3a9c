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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lapse_common.pb.lapse.v1 import common_pb2  # noqa: E402

from tests.infrastructure import provide_infrastructure  # noqa: E402
from tests.integration.clients import StackClients  # noqa: E402
from tests.integration.revocation_support import (  # noqa: E402
    lifetime_after_setup,
    percentile,
    revocation_lateness,
    submit,
    wait_all,
    wait_grant,
)
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


async def batch_lateness(
    clients: StackClients, stack: LapseStack, *, grants: int, far_down: bool, seconds: int
) -> tuple[list[float], float]:
    """Lateness of the healthy agent's revocations in one batch, and how long granting the
    batch took."""
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
    await wait_all(
        clients, stack, [*healthy, *far], status=common_pb2.GRANT_STATUS_ACTIVE, or_later=True
    )
    granted_in = time.perf_counter() - started
    if far_down:
        stack.processes["far-agent"].kill(signal.SIGKILL)
    revoked = await wait_all(clients, stack, healthy, status=common_pb2.GRANT_STATUS_REVOKED)
    if far_down:
        stack.restart("far-agent")
    # Let the far agent's revocations finish (or retry) before the next round reuses roles.
    await wait_all(clients, stack, far, status=common_pb2.GRANT_STATUS_REVOKED)
    return await revocation_lateness(stack, revoked), granted_in


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
        _, granted_in = await batch_lateness(
            clients, stack, grants=grants, far_down=False, seconds=15
        )
        for round_number in range(1, rounds + 1):
            for far_down in (False, True):
                seconds = lifetime_after_setup(granted_in, at_least=15)
                values, granted_in = await batch_lateness(
                    clients, stack, grants=grants, far_down=far_down, seconds=seconds
                )
                label = "far-agent dead" if far_down else "all agents up "
                print(
                    f"round {round_number} lateness, {label}:      ",
                    describe(values),
                    f" (granted in {granted_in:.1f}s, lifetime {seconds}s)",
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
