"""Fixtures shared by integration tests: real infrastructure and a running Lapse stack."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infrastructure import Infrastructure, provide_infrastructure
from tests.stack import LapseStack


@pytest.fixture(scope="session")
def infra() -> Infrastructure:
    return provide_infrastructure()


def running_stack(lapse: LapseStack) -> Iterator[LapseStack]:
    """Start every process of `lapse`; stop them and drop its databases and roles after."""
    lapse.prepare()
    asyncio.run(lapse.provision_kafka())
    asyncio.run(lapse.create_databases())
    try:
        lapse.start_all()
    except Exception:
        lapse.stop_all()
        print("\n".join(lapse.logs()))
        raise
    yield lapse
    lapse.stop_all()
    asyncio.run(lapse.drop_databases())


@pytest.fixture(scope="session")
def stack(infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LapseStack]:
    """Every Lapse service running as its own process, isolated from other runs."""
    yield from running_stack(
        LapseStack(
            infra=infra,
            workdir=Path(tmp_path_factory.mktemp("lapse")),
            users=(
                "alice",
                "bob",
                *(f"u{i:02d}" for i in range(10)),
                "s01",
                "s02",
                *(f"p{i:02d}" for i in range(1, 9)),
                # The forged-results tests.
                "f01",
                "f02",
                # The outbox poison-row test.
                "h01",
                # Requests that reach into someone else's grant.
                "x01",
                "x02",
                # Paging through lists.
                "pg01",
                "pg02",
                # The token-trust test.
                "t01",
                # The agent-safety tests.
                "a01",
            ),
            # r00-r19 for the revocation tests (which count every member); r20-r30 for the
            # scoped-revocation and access-event tests.
            bulk_resources=31,
            far_agent=True,
            # Short deadlines so retries, dead letters and replays happen within seconds:
            # attempts at about 0 s, 4 s and 9.5 s, dead-lettered about 12.5 s after due.
            # A revoke command expires with its ack deadline and the agent works through its
            # commands one by one, so the commands in flight must fit in 3 s of agent time:
            # with 100 in flight, a revoker restarted during 200 revocations re-sent them in
            # bursts the loaded agent could not reach in time, and 2 ran out of attempts.
            extra_env={
                "LAPSE_REVOKER_ACK_DEADLINE_SECONDS": "3",
                "LAPSE_REVOKER_MAX_IN_FLIGHT_PER_AGENT": "10",
                "LAPSE_REVOKER_MAX_ATTEMPTS": "3",
                "LAPSE_REVOKER_BACKOFF_INITIAL_SECONDS": "1",
                "LAPSE_REVOKER_BACKOFF_MAX_SECONDS": "4",
                "LAPSE_REVOKER_AGENT_OFFLINE_AFTER_SECONDS": "6",
            },
        )
    )
