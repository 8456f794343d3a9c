"""A row Kafka will never take does not hold back the rows behind it: the request service's
outbox sets it aside, and the revocation queued after it still reaches the target on time."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2
from lapse_common.topics import Topics

from tests.integration.clients import StackClients, bearer, has_role
from tests.integration.revocation_support import submit, wait_grant
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]
# Over the producer's 1 MiB request limit and the broker's message.max.bytes alike.
POISON_BYTES = 2 * 1024 * 1024


async def test_poison_row_is_set_aside_and_the_next_revocation_reaches_the_target(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    login = stack.login_for("h01")
    try:
        request_id = await submit(clients, stack, user="h01", seconds=600)
        grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_ACTIVE)
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.read_role)

        # The poison row goes in ahead of the revocation, as a 2 MiB reason once did.
        poison_event = f"poison-{uuid.uuid4().hex}"
        database = await asyncpg.connect(
            stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            await database.execute(
                "INSERT INTO request.outbox (event_id, topic, key, value, headers_json, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                poison_event,
                Topics(prefix=stack.topic_prefix).end_requests,
                grant.grant_id,
                b"\x00" * POISON_BYTES,
                json.dumps({"lapse-type": "lapse.v1.GrantEndRequested"}),
                datetime.now(UTC),
            )
            # The API refuses what once made such a row: a 2 MiB reason.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await clients.requests.CancelRequest(
                    request_service_pb2.CancelRequestRequest(
                        request_id=request_id, reason="x" * 2 * 1024 * 1024
                    ),
                    metadata=bearer(stack.token("h01", groups=())),
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (refused.value.details() or "").startswith("reason is 2097152 characters")
            assert len(refused.value.details() or "") < 200
            asked = time.monotonic()
            await clients.requests.RevokeGrant(
                request_service_pb2.RevokeGrantRequest(
                    grant_id=grant.grant_id, reason="done with it"
                ),
                metadata=bearer(stack.token("h01", groups=())),
            )
            await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED)
            revoked_in = time.monotonic() - asked
            assert not await has_role(
                stack.infra.target_admin_dsn, login=login, role=stack.read_role
            )
            poison = await database.fetchrow(
                "SELECT published_at, set_aside_at, set_aside_reason FROM request.outbox"
                " WHERE event_id = $1",
                poison_event,
            )
        finally:
            await database.close()
        assert poison is not None
        assert poison["published_at"] is None
        assert poison["set_aside_at"] is not None
        assert "TooLarge" in poison["set_aside_reason"]
        print(f"revocation behind a poison row: REVOKED {revoked_in:.2f}s after the call")
        assert poison_event in stack.processes["request"].tail(400)
    finally:
        await clients.close()
