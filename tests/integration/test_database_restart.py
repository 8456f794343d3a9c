"""PostgreSQL restarted under a running system (the services' database and the target
alike): every service and the agent reconnect on their own, a grant that falls due during
the restart is still revoked, and access requested afterwards works end to end."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import pytest
from lapse_common.clock import as_utc
from lapse_common.pb.lapse.v1 import common_pb2

from tests.infrastructure import LOCAL_DATABASE
from tests.integration.clients import StackClients, has_role
from tests.integration.local_outage import outage
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ACTIVE = common_pb2.GRANT_STATUS_ACTIVE
REVOKED = common_pb2.GRANT_STATUS_REVOKED


async def test_services_recover_from_a_postgres_restart(
    stack: LapseStack, capsys: pytest.CaptureFixture[str]
) -> None:
    if stack.infra.database_url != LOCAL_DATABASE:
        pytest.skip("PostgreSQL is not the one deploy/local/postgres.sh runs, so it cannot stop it")
    clients = StackClients(stack)
    target, role = stack.infra.target_admin_dsn, stack.bulk_role(24)
    try:
        before = await submit(clients, stack, user="u08", resource="r24", seconds=8)
        grant = await wait_grant(clients, stack, before, status=ACTIVE)
        # The grant falls due while the database is down: it stays down until a few seconds
        # after the expiry, however long stopping it took here.
        due_in = (as_utc(grant.expires_at.ToDatetime()) - datetime.now(UTC)).total_seconds()
        async with outage("postgres.sh", seconds=max(10.0, due_in + 3)) as down:
            await wait_grant(clients, stack, before, status=REVOKED)
            recovered = time.monotonic() - down.back_at
        assert not await has_role(target, login=stack.login_for("u08"), role=role)

        async def submitted() -> str:
            try:
                return await submit(clients, stack, user="u09", resource="r24", seconds=5)
            except grpc.aio.AioRpcError:  # a first call may meet a connection the restart broke
                return ""

        after = await wait_for(submitted, bool, what="a request to be accepted")
        await wait_grant(clients, stack, after, status=ACTIVE)
        await wait_grant(clients, stack, after, status=REVOKED)
        assert not await has_role(target, login=stack.login_for("u09"), role=role)
    finally:
        await clients.close()
    with capsys.disabled():
        print(
            f"\n[postgres restart] database down {down.lasted:.0f}s while a grant fell due; "
            f"REVOKED {recovered:.1f}s after it came back; a new request then ran end to end"
        )
