"""Bad requests get the right gRPC status with a message that says what is wrong, and
nothing is recorded or published. Undecodable Kafka messages are quarantined and the
consumer keeps going."""

from __future__ import annotations

import grpc
import pytest
from lapse_common.messaging.codec import decode
from lapse_common.pb.lapse.v1 import common_pb2, envelope_pb2, events_pb2, request_service_pb2

from tests.integration.clients import StackClients, bearer, has_role
from tests.integration.kafka_records import end_offsets, publish_raw, read_all, read_payloads
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration]


def submission(stack: LapseStack, **overrides: object) -> request_service_pb2.SubmitRequestRequest:
    fields: dict[str, object] = {
        "integration_id": "demo-pg",
        "resource": "appdb",
        "permission": "read",
        "principal": stack.login_for("bob"),
        "duration_seconds": 600,
        "justification": "bad input test",
    }
    fields.update(overrides)
    return request_service_pb2.SubmitRequestRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "overrides", "groups", "token_kind", "code", "message"),
    [
        (
            "no flow allows it",
            {},
            ("sales",),
            "valid",
            grpc.StatusCode.PERMISSION_DENIED,
            "no Access Flow lets bob request read on demo-pg/appdb",
        ),
        (
            "duration over the maximum",
            {"duration_seconds": 7200},
            ("engineering",),
            "valid",
            grpc.StatusCode.INVALID_ARGUMENT,
            "exceeds the maximum of 1h",
        ),
        (
            "unknown principal",
            {"principal": "nobody_here"},
            ("engineering",),
            "valid",
            grpc.StatusCode.NOT_FOUND,
            "unknown principal 'nobody_here'",
        ),
        (
            "unknown permission",
            {"permission": "superuser"},
            ("engineering",),
            "valid",
            grpc.StatusCode.NOT_FOUND,
            "offers no permission 'superuser'",
        ),
        (
            "malformed resource",
            {"resource": "app db;"},
            ("engineering",),
            "valid",
            grpc.StatusCode.INVALID_ARGUMENT,
            "resource 'app db;' may contain only",
        ),
        (
            "missing token",
            {},
            ("engineering",),
            "missing",
            grpc.StatusCode.UNAUTHENTICATED,
            "missing bearer token",
        ),
        (
            "forged token",
            {},
            ("engineering",),
            "forged",
            grpc.StatusCode.UNAUTHENTICATED,
            "invalid bearer token",
        ),
    ],
)
async def test_refused_requests_say_why_and_publish_nothing(
    stack: LapseStack,
    case: str,
    overrides: dict[str, object],
    groups: tuple[str, ...],
    token_kind: str,
    code: grpc.StatusCode,
    message: str,
) -> None:
    clients = StackClients(stack)
    requests_topic = stack.topic_prefix + "lapse.requests.v1"
    before = await end_offsets(stack.observer, requests_topic)
    token = stack.token("bob", groups=groups)
    metadata: tuple[tuple[str, str], ...] = ()
    if token_kind == "valid":
        metadata = bearer(token)
    elif token_kind == "forged":
        header, payload, _signature = token.split(".")
        metadata = bearer(f"{header}.{payload}.{'A' * 86}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await clients.requests.SubmitRequest(submission(stack, **overrides), metadata=metadata)
        assert refused.value.code() == code, case
        assert message in (refused.value.details() or ""), refused.value.details()
        listed = await clients.requests.ListActivity(
            request_service_pb2.ListActivityRequest(), metadata=bearer(stack.token("bob"))
        )
        assert not [r for r in listed.requests if r.justification == "bad input test"]
    finally:
        await clients.close()
    assert await end_offsets(stack.observer, requests_topic) == before


async def next_request_goes_active(stack: LapseStack, *, after: str) -> None:
    """Consumers that refused a record go on: bob's next request is approved and granted."""
    clients = StackClients(stack)
    try:
        token = stack.token("bob")
        response = await clients.requests.SubmitRequest(submission(stack), metadata=bearer(token))
        await wait_for(
            lambda: clients.get_request(response.request.request_id, token),
            lambda v: bool(v.grants) and v.grants[0].status == common_pb2.GRANT_STATUS_ACTIVE,
            what=f"grant ACTIVE after {after}",
        )
    finally:
        await clients.close()


async def test_undecodable_message_is_quarantined_and_consumers_keep_going(
    stack: LapseStack,
) -> None:
    # Only the approval service may write decisions: this is it gone wrong (or compromised).
    approval = stack.kafka_as("lapse-approval")
    decisions = stack.topic_prefix + "lapse.decisions.v1"
    await publish_raw(
        approval, decisions, value=b"\xff\x00not a protobuf envelope", key=b"req-garbage"
    )
    await publish_raw(
        approval, decisions, value=b'{"json": "from a foreign producer"}', key=b"req-json"
    )

    async def quarantined() -> list[events_pb2.QuarantinedMessage]:
        found = []
        for record in await read_all(stack.observer, stack.topic_prefix + "lapse.quarantine.v1"):
            payload = decode(record.value).payload
            assert isinstance(payload, events_pb2.QuarantinedMessage)
            if payload.source_topic == decisions:
                found.append(payload)
        return found

    # Every consumer of the decisions topic (request service, scheduler, audit) quarantines
    # both records with its own name on them.
    consumers = {"request-decisions", "grant-scheduler-decisions"}
    found = await wait_for(
        quarantined,
        lambda q: all(sum(1 for x in q if x.consumer == c) >= 2 for c in consumers),
        what="both records quarantined by request and scheduler consumers",
    )
    assert all(q.reason for q in found)
    assert {q.key for q in found} == {b"req-garbage", b"req-json"}

    # ... and they keep going: a new request is still approved and granted.
    await next_request_goes_active(stack, after="garbage")


async def test_a_decision_out_of_bounds_is_quarantined_before_anything_acts_on_it(
    stack: LapseStack,
) -> None:
    """A compromised (or broken) approval service writes an approval whose detail is 100 KB:
    every consumer refuses it by its bounds, names the field, grants nothing in the target,
    and goes on with the next decision."""
    approval = stack.kafka_as("lapse-approval")
    decisions = stack.topic_prefix + "lapse.decisions.v1"
    login, role = stack.login_for("x02"), stack.bulk_role(29)
    oversized = events_pb2.RequestDecided(
        request_id="req-oversized",
        decision=common_pb2.REQUEST_STATUS_APPROVED,
        decided_by="lapse-approval",
        detail="approved " + "x" * (100 * 1024),
        requester="x02",
        duration_seconds=600,
        items=[
            common_pb2.GrantSpec(
                integration_id="demo-pg",
                agent_id="demo-agent",
                resource="r29",
                permission="read",
                principal=login,
            )
        ],
    )
    # Built by hand: Lapse's own envelope builder refuses to write this.
    envelope = envelope_pb2.Envelope(
        event_id="evt-oversized-decision",
        type=oversized.DESCRIPTOR.full_name,
        producer="approval",
        request_id="req-oversized",
        payload=oversized.SerializeToString(),
    )
    envelope.occurred_at.GetCurrentTime()
    await publish_raw(approval, decisions, value=envelope.SerializeToString(), key=b"req-oversized")

    async def quarantined() -> list[events_pb2.QuarantinedMessage]:
        records = await read_payloads(
            stack.observer,
            stack.topic_prefix + "lapse.quarantine.v1",
            events_pb2.QuarantinedMessage,
        )
        return [q for q in records if q.key == b"req-oversized"]

    found = await wait_for(
        quarantined,
        lambda q: {"request-decisions", "grant-scheduler-decisions"} <= {x.consumer for x in q},
        what="the oversized decision quarantined by the request service and the scheduler",
    )
    for record in found:
        assert "lapse.v1.RequestDecided out of bounds: detail is 102409 characters long" in (
            record.reason
        ), record.reason
        assert len(record.reason) < 400

    # The next decision is acted on, and the refused one granted nothing in the target.
    await next_request_goes_active(stack, after="the oversized decision")
    assert not await has_role(stack.infra.target_admin_dsn, login=login, role=role)
