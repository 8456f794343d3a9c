"""Internal services drive the lifecycle with signed access events on the real system:
offboarding, incidents (panic + lockdown, then lifting it), a CI pipeline's request; events
from producers that are unknown or not allowed that kind change nothing and are
quarantined with the reason."""

from __future__ import annotations

import grpc
import pytest
from lapse_common.access_events import (
    AccessEventPublisher,
    AccessRequested,
    IncidentDeclared,
    IncidentResolved,
    UserOffboarded,
)
from lapse_common.messaging.codec import decode
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2

from tests.integration.clients import StackClients, bearer, has_role
from tests.integration.kafka_records import read_all
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import PRODUCERS, LapseStack

pytestmark = [pytest.mark.integration]
ACTIVE = common_pb2.GRANT_STATUS_ACTIVE
REVOKED = common_pb2.GRANT_STATUS_REVOKED


async def publish(stack: LapseStack, producer: str, event: object) -> str:
    # The intruder's key is registered nowhere; it sends with a real producer's Kafka
    # credential, as an attacker who stole one would.
    kafka = stack.kafka_as(
        f"lapse-producer-{producer if producer in PRODUCERS else 'ci-pipelines'}"
    )
    key = (stack.producer_keys / f"{producer}.key").read_bytes()
    async with AccessEventPublisher.connect(
        kafka=kafka, producer=producer, private_key_pem=key
    ) as publisher:
        return await publisher.publish(event)  # type: ignore[arg-type]


async def quarantined_reasons(stack: LapseStack) -> list[str]:
    records = await read_all(stack.observer, stack.topic_prefix + "lapse.quarantine.v1")
    reasons = []
    for record in records:
        payload = decode(record.value).payload
        assert isinstance(payload, events_pb2.QuarantinedMessage)
        if payload.source_topic.endswith("lapse.access-events.v1"):
            reasons.append(payload.reason)
    return reasons


async def test_offboarding_ends_access_and_pending_requests_and_strangers_change_nothing(
    stack: LapseStack,
) -> None:
    clients = StackClients(stack)
    target = stack.infra.target_admin_dsn
    try:
        active = [
            await submit(clients, stack, user="p06", resource=resource, seconds=600)
            for resource in ("r27", "r28")
        ]
        pending = await submit(clients, stack, user="p06", resource="g-any", seconds=600)
        for request_id in active:
            await wait_grant(clients, stack, request_id, status=ACTIVE)

        # An unregistered key, and a registered producer not allowed to offboard anyone.
        await publish(stack, "intruder", UserOffboarded(subject="p06", reason="forged"))
        await publish(stack, "ci-pipelines", UserOffboarded(subject="p06", reason="not mine"))
        reasons = await wait_for(
            lambda: quarantined_reasons(stack),
            lambda found: len(found) >= 2,
            what="both refused events on the quarantine topic",
        )
        assert any("unknown producer" in r and "intruder" in r for r in reasons), reasons
        assert any("ci-pipelines" in r and "user_offboarded" in r for r in reasons), reasons
        # Quarantined means handled: the request service refused each event and rolled back
        # whatever it would have changed (its own pending request first of all).
        for request_id in active:
            view = await clients.get_request(request_id, stack.token("p06"))
            assert view.grants[0].status == ACTIVE
        assert (await clients.get_request(pending, stack.token("p06"))).status == (
            common_pb2.REQUEST_STATUS_PENDING_APPROVAL
        )

        await publish(
            stack, "hr-offboarding", UserOffboarded(subject="p06", reason="left the company")
        )
        for index, request_id in zip((27, 28), active, strict=True):
            grant = await wait_grant(clients, stack, request_id, status=REVOKED)
            assert grant.history[-1].reason == common_pb2.REASON_OFFBOARDING
            assert not await has_role(
                target, login=stack.login_for("p06"), role=stack.bulk_role(index)
            )
        canceled = await wait_for(
            lambda: clients.get_request(pending, stack.token("p06")),
            lambda view: view.status == common_pb2.REQUEST_STATUS_CANCELED,
            what="the pending request to be canceled",
        )
        assert "left the company" in canceled.decision_detail
    finally:
        await clients.close()


async def test_incident_panics_and_locks_its_scope_until_resolved(stack: LapseStack) -> None:
    clients = StackClients(stack)
    try:
        inside = await submit(clients, stack, user="p07", resource="r29", seconds=600)
        outside = await submit(clients, stack, user="p07", resource="r30", seconds=600)
        for request_id in (inside, outside):
            await wait_grant(clients, stack, request_id, status=ACTIVE)
        await publish(
            stack,
            "incident-bot",
            IncidentDeclared(
                incident_id="INC-42",
                scope=common_pb2.AccessScope(resource="r29"),
                reason="credential leak",
                lockdown=True,
            ),
        )
        grant = await wait_grant(clients, stack, inside, status=REVOKED)
        assert grant.history[-1].reason == common_pb2.REASON_PANIC
        assert (await clients.get_request(outside, stack.token("p07"))).grants[0].status == ACTIVE

        async def refused_in_scope() -> str:
            try:
                await submit(clients, stack, user="p07", resource="r29", seconds=60)
            except grpc.aio.AioRpcError as error:
                return error.details() or ""
            return "accepted"

        message = await wait_for(refused_in_scope, lambda m: "lockdown" in m, what="the lockdown")
        assert "incident INC-42" in message or "credential leak" in message

        await publish(
            stack, "incident-bot", IncidentResolved(incident_id="INC-42", reason="rotated")
        )

        async def accepted() -> str:
            try:
                return await submit(clients, stack, user="p07", resource="r29", seconds=60)
            except grpc.aio.AioRpcError:
                return ""

        again = await wait_for(accepted, bool, what="requests in scope to be accepted")
        await wait_grant(clients, stack, again, status=ACTIVE)
    finally:
        await clients.close()


async def test_a_ci_pipeline_requests_access_as_a_machine_identity(stack: LapseStack) -> None:
    clients = StackClients(stack)
    admin = stack.token("ops", roles=("admin",))
    try:
        await publish(
            stack,
            "ci-pipelines",
            AccessRequested(
                machine_identity="ci-deploy",
                integration_id="demo-pg",
                resource="g-machine",
                permission="read",
                principal=stack.login_for("ci"),
                duration_seconds=120,
                justification="deploy pipeline #881",
            ),
        )

        async def machine_requests() -> list[request_service_pb2.AccessRequestView]:
            listed = await clients.requests.ListActivity(
                request_service_pb2.ListActivityRequest(all_users=True, limit=500),
                metadata=bearer(admin),
            )
            return [r for r in listed.requests if r.requester == "machine:ci-deploy"]

        found = await wait_for(machine_requests, bool, what="the machine's request")
        grant = await wait_grant(clients, stack, found[0].request_id, status=ACTIVE)
        assert grant.spec.agent_id == "demo-agent"
        assert await has_role(
            stack.infra.target_admin_dsn,
            login=stack.login_for("ci"),
            role=stack.gated_role("g-machine"),
        )
        # A person cannot pose as the machine through the API.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.requests.SubmitRequest(
                request_service_pb2.SubmitRequestRequest(
                    integration_id="demo-pg",
                    resource="g-machine",
                    permission="read",
                    principal=stack.login_for("ci"),
                ),
                metadata=bearer(stack.token("machine:ci-deploy")),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await clients.close()
