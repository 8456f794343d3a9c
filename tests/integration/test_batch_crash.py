"""A consumer killed in the middle of a batch: nothing of the batch lost, nothing applied
twice, on the real Kafka and PostgreSQL.

The audit consumer is made to stop inside a batch deterministically: it is paused while
requests produce a backlog of events, so that on waking it takes them as one batch; the test
holds the lock on the audit chain head, so the batch's transaction (its inbox rows already
written) waits on the first append; then the process is SIGKILLed. The restarted audit must
hold every event the requests put on Kafka, each exactly once.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import asyncpg
import pytest
from lapse_common.messaging.codec import decode
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2

from tests.integration.clients import StackClients, bearer
from tests.integration.kafka_records import read_all
from tests.integration.revocation_support import submit, wait_all
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USERS = [f"u{i:02d}" for i in range(10)]
# What the requests put on these topics is what the audit must hold afterwards.
TOPICS = ("lapse.requests.v1", "lapse.decisions.v1", "lapse.grants.v1", "lapse.agent-results.v1")


async def audit_waiting_on_the_chain_head(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE '%audit_chain_head%'"
            )
        )
    finally:
        await connection.close()


async def event_ids_on_kafka(stack: LapseStack, keys: set[bytes]) -> Counter[str]:
    found: Counter[str] = Counter()
    for topic in TOPICS:
        for record in await read_all(stack.observer, stack.topic_prefix + topic):
            if record.key in keys:
                found[decode(record.value).event_id] += 1
    return found


async def test_audit_killed_mid_batch_loses_and_repeats_nothing(stack: LapseStack) -> None:
    clients = StackClients(stack)
    audit = stack.processes["audit"]
    auditor = stack.token("auditor-1", roles=("auditor",))
    dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    assert audit.process is not None
    request_ids: list[str] = []
    grants: list[request_service_pb2.GrantView] = []
    lock_holder = await asyncpg.connect(dsn)
    try:
        # The chain head exists once anything was audited; the stack's start audits plenty.
        assert await lock_holder.fetchval("SELECT count(*) FROM audit.audit_chain_head") == 1
        audit.process.send_signal(signal.SIGSTOP)
        try:
            request_ids = list(
                await asyncio.gather(
                    *(
                        submit(clients, stack, user=user, resource=f"r{index:02d}", seconds=600)
                        for user in USERS
                        for index in (0, 1)
                    )
                )
            )
            grants = await wait_all(
                clients, stack, request_ids, status=common_pb2.GRANT_STATUS_ACTIVE
            )
            keys = {r.encode() for r in request_ids} | {g.grant_id.encode() for g in grants}
            expected = await event_ids_on_kafka(stack, keys)
            # Per request at least: submitted, decided, GRANTING, ACTIVE, the agent's result.
            assert sum(expected.values()) >= 5 * len(request_ids)
            transaction = lock_holder.transaction()
            await transaction.start()
            await lock_holder.execute("SELECT 1 FROM audit.audit_chain_head FOR UPDATE")
        finally:
            audit.process.send_signal(signal.SIGCONT)
        await wait_for(
            lambda: audit_waiting_on_the_chain_head(dsn),
            lambda waiting: waiting > 0,
            what="the audit consumer to be inside its batch, waiting on the chain head",
            interval=0.1,
        )
        audit.kill(signal.SIGKILL)
        await transaction.rollback()
    finally:
        await lock_holder.close()
        if audit.process is None or audit.process.poll() is not None:
            await asyncio.to_thread(stack.restart, "audit")
        else:
            audit.process.send_signal(signal.SIGCONT)

    async def audited() -> Counter[str]:
        """Each audit row once: the events of each request and of each grant."""
        rows = {}
        for request_id in request_ids:
            for event in await clients.audit_events(token=auditor, request_id=request_id):
                rows[event.sequence] = event.event_id
        for grant in grants:
            for event in await clients.audit_events(token=auditor, grant_id=grant.grant_id):
                rows[event.sequence] = event.event_id
        return Counter(rows.values())

    try:
        found = await wait_for(
            audited,
            lambda seen: set(expected) <= set(seen),
            what="the restarted audit to hold every event of the batch",
            progress=len,
        )
        missing = set(expected) - set(found)
        twice = {event_id: n for event_id, n in found.items() if n > 1}
        assert not missing, f"lost from the audit: {sorted(missing)[:5]}"
        assert not twice, f"audited more than once: {twice}"
        assert all(n == 1 for n in expected.values()), "each event is on Kafka once"
    finally:
        # The grants would outlive the test; later tests count what the bulk roles hold.
        user_of = {stack.login_for(user): user for user in USERS}
        for grant in grants:
            await clients.requests.RevokeGrant(
                request_service_pb2.RevokeGrantRequest(grant_id=grant.grant_id, reason="done"),
                metadata=bearer(
                    stack.token(user_of[grant.spec.principal], groups=("engineering",))
                ),
            )
        await wait_all(clients, stack, request_ids, status=common_pb2.GRANT_STATUS_REVOKED)
        await clients.close()
