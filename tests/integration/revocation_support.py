"""Shared steps for the revocation tests: asking for access, waiting for statuses, reading
what the revoker and agents put on Kafka."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from lapse_common.clock import as_utc
from lapse_common.messaging.codec import decode
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2

from tests.integration.clients import StackClients, bearer
from tests.integration.kafka_records import agent_report, read_all
from tests.integration.waiting import wait_for
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


def has_reached(grant: request_service_pb2.GrantView, status: int) -> bool:
    """The grant is in `status` now or has been: a grant that lives a few seconds may
    already have moved on by the time a wait over hundreds of them looks again."""
    name = common_pb2.GrantStatus.Name(status).removeprefix("GRANT_STATUS_")  # type: ignore[arg-type]
    return grant.status == status or any(step.status == name for step in grant.history)


async def wait_grant(
    clients: StackClients,
    stack: LapseStack,
    request_id: str,
    *,
    status: int,
    stuck: bool | None = None,
    or_later: bool = False,
) -> request_service_pb2.GrantView:
    """Wait until the request's grant is in `status` (or, with `or_later`, has been in it);
    any change to the request (a new step in its history) counts as progress."""
    admin = stack.token("ops", roles=("admin",))

    def reached(view: request_service_pb2.AccessRequestView) -> bool:
        grant = grant_of(view)
        if grant is None or (stuck is not None and grant.stuck != stuck):
            return False
        return has_reached(grant, status) if or_later else grant.status == status

    view = await wait_for(
        lambda: clients.get_request(request_id, admin),
        reached,
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
    or_later: bool = False,
) -> list[request_service_pb2.GrantView]:
    """Wait until every request's grant is in `status` (or, with `or_later`, has been in it).
    The wait goes on while grants keep moving, however slowly the machine gets them there,
    and fails only when none has moved for the stall interval, saying where they stand. One
    Activity query per poll, so waiting on hundreds of grants does not load the system it
    measures."""
    wanted = set(request_ids)
    target = common_pb2.GrantStatus.Name(status)  # type: ignore[arg-type]

    def reached(grant: request_service_pb2.GrantView) -> bool:
        return has_reached(grant, status) if or_later else grant.status == status

    def moves(found: dict[str, request_service_pb2.GrantView]) -> object:
        # A grant still waiting to fall due is moving towards it with the clock: a batch given
        # a long lifetime on a slow machine must not count as stalled before it is due.
        now = datetime.now(UTC)
        waiting_to_fall_due = any(
            not reached(g)
            and g.HasField("expires_at")
            and as_utc(g.expires_at.ToDatetime()) > now
            for g in found.values()
        )
        clock = int(now.timestamp()) if waiting_to_fall_due else None
        states = sorted((rid, grant.status, len(grant.history)) for rid, grant in found.items())
        return (clock, states)

    def where_they_stand(found: dict[str, request_service_pb2.GrantView]) -> str:
        behind = {rid: g for rid, g in found.items() if not reached(g)}
        missing = sorted(wanted - set(found))
        standing = Counter(common_pb2.GrantStatus.Name(g.status) for g in behind.values())
        return (
            f"{len(wanted) - len(behind) - len(missing)} of {len(wanted)} reached {target}; "
            f"not yet: {dict(standing)}"
            + (f", {len(missing)} without a grant yet (e.g. {missing[:3]})" if missing else "")
            + "".join(
                f"\n  {rid}: {common_pb2.GrantStatus.Name(g.status)} stuck={g.stuck} "
                f"last step: {g.history[-1].status if g.history else '-'} "
                f"{g.history[-1].detail if g.history else ''}"
                for rid, g in list(behind.items())[:5]
            )
        )

    grants = await wait_for(
        lambda: latest_grants(clients, stack, request_ids),
        lambda found: len(found) == len(wanted) and all(reached(g) for g in found.values()),
        what=f"{len(wanted)} grants to reach {target}" + (" or later" if or_later else ""),
        progress=moves,
        describe=where_they_stand,
        interval=1.0,
    )
    return [grants[rid] for rid in request_ids]


def lifetime_after_setup(granted_in: float, *, at_least: int) -> int:
    """A lifetime for a batch like one this machine just took `granted_in` seconds to grant:
    twice that (the pace varies while a run goes on) plus a few seconds, so the whole batch is
    ACTIVE before its first grant falls due on a slow machine too; `at_least` on a fast one."""
    return max(at_least, math.ceil(2 * granted_in) + 5)


def transition_time(grant: request_service_pb2.GrantView, status: str) -> datetime:
    step = next(s for s in grant.history if s.status == status)
    return as_utc(step.at.ToDatetime())


async def verified_revokes(stack: LapseStack) -> dict[str, datetime]:
    """When each grant's agent had removed the access and read the target back (its first
    verified revoke's completed_at), read from lapse.agent-results.v1 in one pass."""
    records = await read_all(stack.observer, stack.topic_prefix + "lapse.agent-results.v1")
    removed: dict[str, datetime] = {}
    for record in records:
        result = agent_report(decode(record.value).payload, events_pb2.AgentResult)
        if (
            result is not None
            and result.kind == common_pb2.COMMAND_KIND_REVOKE
            and result.outcome == events_pb2.RESULT_OUTCOME_SUCCEEDED
            and result.verified
        ):
            done = as_utc(result.completed_at.ToDatetime())
            removed[result.grant_id] = min(done, removed.get(result.grant_id, done))
    return removed


async def revocation_lateness(
    stack: LapseStack, grants: Sequence[request_service_pb2.GrantView]
) -> list[float]:
    """Seconds from each grant's expiry to its verified revoke (`verified_revokes`). Unlike
    the Activity view's timestamps this does not include how fast the request service
    records the fact."""
    removed = await verified_revokes(stack)
    return [
        (removed[g.grant_id] - as_utc(g.expires_at.ToDatetime())).total_seconds() for g in grants
    ]


async def results_by_grant(stack: LapseStack) -> dict[str, list[events_pb2.AgentResult]]:
    """Every agent result on lapse.agent-results.v1, once per event id, by grant, in one
    pass over the topic."""
    records = await read_all(stack.observer, stack.topic_prefix + "lapse.agent-results.v1")
    unique: dict[str, events_pb2.AgentResult] = {}
    for record in records:
        event = decode(record.value)
        result = agent_report(event.payload, events_pb2.AgentResult)
        if result is not None:  # forged, unsigned ones are the tests' own
            unique[event.event_id] = result
    found: dict[str, list[events_pb2.AgentResult]] = {}
    for result in unique.values():
        found.setdefault(result.grant_id, []).append(result)
    return found


async def agent_results(stack: LapseStack, grant_id: str) -> list[events_pb2.AgentResult]:
    return (await results_by_grant(stack)).get(grant_id, [])


def target_changes(results: Sequence[events_pb2.AgentResult], kind: int) -> int:
    """How many times the agent changed the target for this kind of command (a repeated
    command answers `changed=False`)."""
    return sum(1 for r in results if r.kind == kind and r.changed)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
