"""Shared steps for the revocation tests: asking for access, waiting for statuses, reading
what the revoker and agents put on Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lapse_common.clock import as_utc
from lapse_common.messaging.codec import decode
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2

from tests.integration.clients import StackClients, bearer, wait_for
from tests.integration.kafka_records import read_all
from tests.stack import LapseStack

SRE_ROLES = ("sre",)


async def submit(
    clients: StackClients,
    stack: LapseStack,
    *,
    user: str,
    seconds: int,
    resource: str = "appdb",
    permission: str = "read",
    integration: str = "demo-pg",
    groups: tuple[str, ...] = ("engineering",),
) -> str:
    response = await clients.requests.SubmitRequest(
        request_service_pb2.SubmitRequestRequest(
            integration_id=integration,
            resource=resource,
            permission=permission,
            principal=stack.login_for(user),
            duration_seconds=seconds,
            justification="revocation test",
        ),
        metadata=bearer(stack.token(user, groups=groups)),
    )
    return response.request.request_id


def grant_of(view: request_service_pb2.AccessRequestView) -> request_service_pb2.GrantView | None:
    return view.grants[0] if view.grants else None


async def wait_grant(
    clients: StackClients,
    stack: LapseStack,
    request_id: str,
    *,
    status: int,
    timeout: float,
    stuck: bool | None = None,
) -> request_service_pb2.GrantView:
    admin = stack.token("ops", roles=("admin",))

    def reached(view: request_service_pb2.AccessRequestView) -> bool:
        grant = grant_of(view)
        return (
            grant is not None and grant.status == status and (stuck is None or grant.stuck == stuck)
        )

    view = await wait_for(
        lambda: clients.get_request(request_id, admin),
        reached,
        timeout=timeout,
        interval=0.2,
        what=f"{request_id} to reach {common_pb2.GrantStatus.Name(status)}"  # type: ignore[arg-type]
        + ("" if stuck is None else f" stuck={stuck}"),
    )
    grant = grant_of(view)
    assert grant is not None
    return grant


async def latest_grants(
    clients: StackClients, stack: LapseStack, request_ids: Sequence[str]
) -> dict[str, request_service_pb2.GrantView]:
    """The grant of each of these requests (those that have one), in one Activity query."""
    wanted = set(request_ids)
    listed = await clients.requests.ListActivity(
        request_service_pb2.ListActivityRequest(all_users=True, limit=500),
        metadata=bearer(stack.token("ops", roles=("admin",))),
    )
    return {
        view.request_id: view.grants[0]
        for view in listed.requests
        if view.request_id in wanted and view.grants
    }


async def grant_statuses(
    clients: StackClients, stack: LapseStack, request_ids: Sequence[str]
) -> dict[str, int]:
    found = await latest_grants(clients, stack, request_ids)
    return {rid: grant.status for rid, grant in found.items()}


async def wait_all(
    clients: StackClients,
    stack: LapseStack,
    request_ids: Sequence[str],
    *,
    status: int,
    timeout: float,
    or_later: bool = False,
) -> list[request_service_pb2.GrantView]:
    """Wait until every request's grant is in `status` (or, with `or_later`, has been in it:
    short-lived grants may already have moved on); one Activity query per poll, so
    waiting on hundreds of grants does not load the system it measures."""
    wanted = set(request_ids)
    name = common_pb2.GrantStatus.Name(status).removeprefix("GRANT_STATUS_")  # type: ignore[arg-type]

    def reached(grant: request_service_pb2.GrantView) -> bool:
        if grant.status == status:
            return True
        return or_later and any(step.status == name for step in grant.history)

    grants = await wait_for(
        lambda: latest_grants(clients, stack, request_ids),
        lambda found: len(found) == len(wanted) and all(reached(g) for g in found.values()),
        timeout=timeout,
        interval=1.0,
        what=f"{len(wanted)} grants to reach {common_pb2.GrantStatus.Name(status)}",  # type: ignore[arg-type]
    )
    return [grants[rid] for rid in request_ids]


def transition_time(grant: request_service_pb2.GrantView, status: str) -> datetime:
    step = next(s for s in grant.history if s.status == status)
    return as_utc(step.at.ToDatetime())


async def revocation_lateness(
    stack: LapseStack, grants: Sequence[request_service_pb2.GrantView]
) -> list[float]:
    """Seconds from each grant's expiry to the moment its agent had removed the access and
    read the target back (the verified revoke's completed_at), read from
    lapse.agent-results.v1 in one pass. Unlike the Activity view's timestamps this does not
    include how fast the request service records the fact."""
    records = await read_all(
        stack.infra.kafka_bootstrap, stack.topic_prefix + "lapse.agent-results.v1"
    )
    removed: dict[str, datetime] = {}
    for record in records:
        result = decode(record.value).payload
        if (
            isinstance(result, events_pb2.AgentResult)
            and result.kind == common_pb2.COMMAND_KIND_REVOKE
            and result.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED
            and result.verified
        ):
            done = as_utc(result.completed_at.ToDatetime())
            removed[result.grant_id] = min(done, removed.get(result.grant_id, done))
    return [
        (removed[g.grant_id] - as_utc(g.expires_at.ToDatetime())).total_seconds() for g in grants
    ]


async def agent_results(stack: LapseStack, grant_id: str) -> list[events_pb2.AgentResult]:
    records = await read_all(
        stack.infra.kafka_bootstrap, stack.topic_prefix + "lapse.agent-results.v1"
    )
    unique: dict[str, events_pb2.AgentResult] = {}
    for record in records:
        if record.key != grant_id.encode():
            continue
        event = decode(record.value)
        assert isinstance(event.payload, events_pb2.AgentResult)
        unique[event.event_id] = event.payload
    return list(unique.values())


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
