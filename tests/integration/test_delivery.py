"""Delivery rules on the real system: duplicates cause one effect, a scheduler killed with
SIGKILL still revokes what fell due while it was down, and an event committed to the
outbox survives a crash before it reached Kafka."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime

import pytest
from lapse_common.clock import SystemClock, as_utc
from lapse_common.db import Base, create_engine_for_service, create_schema, session_factory
from lapse_common.messaging.broker import create_broker
from lapse_common.messaging.codec import decode
from lapse_common.messaging.outbox import OutboxRelay, enqueue
from lapse_common.messaging.publishing import BrokerPublisher
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2
from sqlalchemy import Column, MetaData, String, Table, insert

from tests.integration.clients import StackClients, bearer, has_role
from tests.integration.kafka_records import agent_report, publish_raw, read_all
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def request_access(
    clients: StackClients, stack: LapseStack, *, user: str, permission: str, seconds: int
) -> str:
    response = await clients.requests.SubmitRequest(
        request_service_pb2.SubmitRequestRequest(
            integration_id="demo-pg",
            resource="appdb",
            permission=permission,
            principal=stack.login_for(user),
            duration_seconds=seconds,
            justification="delivery test",
        ),
        metadata=bearer(stack.token(user)),
    )
    return response.request.request_id


def status_of(view: request_service_pb2.AccessRequestView) -> int:
    return view.grants[0].status if view.grants else 0


async def records_for_grant(stack: LapseStack, topic: str, grant_id: str) -> list:  # type: ignore[type-arg]
    records = await read_all(stack.observer, stack.topic_prefix + topic)
    return [r for r in records if r.key == grant_id.encode()]


async def test_redelivered_command_and_event_cause_one_effect(stack: LapseStack) -> None:
    clients = StackClients(stack)
    token = stack.token("bob")
    auditor = stack.token("auditor-1", roles=("auditor",))
    try:
        request_id = await request_access(
            clients, stack, user="bob", permission="write", seconds=20
        )
        view = await wait_for(
            lambda: clients.get_request(request_id, token),
            lambda v: status_of(v) == common_pb2.GRANT_STATUS_ACTIVE,
            what="grant ACTIVE",
        )
        grant_id = view.grants[0].grant_id
        command_topic = stack.topic_prefix + "lapse.agent.demo-agent.commands.v1"
        commands = await records_for_grant(stack, "lapse.agent.demo-agent.commands.v1", grant_id)
        results = await records_for_grant(stack, "lapse.agent-results.v1", grant_id)
        decisions = [
            r
            for r in await read_all(stack.observer, stack.topic_prefix + "lapse.decisions.v1")
            if r.key == request_id.encode()
        ]
        assert len(commands) == 1 and len(results) == 1 and len(decisions) == 1

        # The same grant command, the same agent result and the same decision, again.
        # Each sent again by the principal that sent it first.
        await publish_raw(
            stack.kafka_as("lapse-grant-scheduler"),
            command_topic,
            value=commands[0].value,
            key=commands[0].key,
        )
        for record, sender in (
            (results[0], "lapse-agent-demo-agent"),
            (decisions[0], "lapse-approval"),
        ):
            await publish_raw(
                stack.kafka_as(sender), record.topic, value=record.value, key=record.key
            )

        # The agent answers the duplicate without executing it again.
        answers = await wait_for(
            lambda: records_for_grant(stack, "lapse.agent-results.v1", grant_id),
            lambda rs: len(rs) >= 3,
            what="the agent's answer to the duplicate command",
        )
        # Keyed by event id: the re-published result is the same event, not a new effect.
        grant_results = {
            decode(r.value).event_id: agent_report(decode(r.value).payload, events_pb2.AgentResult)
            for r in answers
        }
        assert len(grant_results) == 2, grant_results
        executed = [
            p
            for p in grant_results.values()
            if p is not None and p.kind == common_pb2.COMMAND_KIND_GRANT and p.changed
        ]
        assert len(executed) == 1, grant_results

        # Let the duplicates drain, then check nothing was done twice.
        await asyncio.sleep(3)
        view = await clients.get_request(request_id, token)
        assert len(view.grants) == 1, "a re-delivered decision created a second grant"
        statuses = [step.status for step in view.grants[0].history]
        assert statuses.count("ACTIVE") == 1, statuses
        # Audit finds a new agent's command topic on its next metadata refresh.
        events = await wait_for(
            lambda: clients.audit_events(token=auditor, grant_id=grant_id),
            lambda evs: any(e.type == "lapse.v1.SignedCommand" for e in evs),
            what="audit to record the grant command",
        )
        assert len({e.event_id for e in events}) == len(events)
        assert Counter(e.type for e in events)["lapse.v1.SignedCommand"] == 1

        revoked = await wait_for(
            lambda: clients.get_request(request_id, token),
            lambda v: status_of(v) == common_pb2.GRANT_STATUS_REVOKED,
            what="grant REVOKED",
        )
        assert [s.status for s in revoked.grants[0].history].count("REVOKED") == 1
        assert not await has_role(
            stack.infra.target_admin_dsn, login=stack.login_for("bob"), role=stack.write_role
        )
    finally:
        await clients.close()


async def test_scheduler_killed_while_active_still_revokes_after_restart(stack: LapseStack) -> None:
    clients = StackClients(stack)
    token = stack.token("alice")
    login = stack.login_for("alice")
    try:
        request_id = await request_access(
            clients, stack, user="alice", permission="write", seconds=5
        )
        view = await wait_for(
            lambda: clients.get_request(request_id, token),
            lambda v: status_of(v) == common_pb2.GRANT_STATUS_ACTIVE,
            what="grant ACTIVE",
        )
        expires_at = as_utc(view.grants[0].expires_at.ToDatetime())
        stack.processes["grant-scheduler"].kill(signal.SIGKILL)

        # Sleep past the expiry while the scheduler is dead: nothing can revoke it now.
        await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 3)
        assert await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)
        assert (
            status_of(await clients.get_request(request_id, token))
            == common_pb2.GRANT_STATUS_ACTIVE
        )

        stack.restart("grant-scheduler")
        revoked = await wait_for(
            lambda: clients.get_request(request_id, token),
            lambda v: status_of(v) == common_pb2.GRANT_STATUS_REVOKED,
            what="grant REVOKED after restart",
        )
        assert not await has_role(stack.infra.target_admin_dsn, login=login, role=stack.write_role)
        assert [s.status for s in revoked.grants[0].history] == [
            "GRANTING",
            "ACTIVE",
            "REVOKING",
            "REVOKED",
        ]
    finally:
        await clients.close()


async def test_outbox_event_committed_before_a_crash_is_published_later(stack: LapseStack) -> None:
    """The state change and its event commit together; the process 'crashes' before any
    relay ran. A relay started afterwards (as on restart) publishes the event."""
    engine = create_engine_for_service(stack.database_url, schema="outbox_crash_probe")
    probe = MetaData()
    state = Table("probe_state", probe, Column("id", String(64), primary_key=True))
    await create_schema(engine, schema="outbox_crash_probe", metadatas=[Base.metadata, probe])
    sessions = session_factory(engine)
    clock = SystemClock()
    topic = stack.topic_prefix + "lapse.grants.v1"
    grant_id = f"grant-outbox-{stack.run_id}"
    async with sessions() as session, session.begin():
        await session.execute(insert(state).values(id=grant_id))
        event_id = enqueue(
            session,
            topic=topic,
            key=grant_id,
            payload=events_pb2.GrantStatusChanged(
                grant_id=grant_id, status=common_pb2.GRANT_STATUS_ACTIVE
            ),
            producer="outbox-probe",
            clock=clock,
            grant_id=grant_id,
        )
    await engine.dispose()  # the crash: nothing was relayed

    assert not [r for r in await read_all(stack.observer, topic) if r.key == grant_id.encode()]

    engine = create_engine_for_service(stack.database_url, schema="outbox_crash_probe")
    broker = create_broker(stack.kafka_as("lapse-grant-scheduler"), client_id="outbox-probe")
    await broker.connect()
    try:
        relay = OutboxRelay(
            sessions=session_factory(engine), publisher=BrokerPublisher(broker), clock=clock
        )
        assert await relay.relay_once() == 1
        assert await relay.relay_once() == 0, "a published row must not be published again"
    finally:
        await broker.stop()
        await engine.dispose()
    published = [r for r in await read_all(stack.observer, topic) if r.key == grant_id.encode()]
    assert [decode(r.value).event_id for r in published] == [event_id]
