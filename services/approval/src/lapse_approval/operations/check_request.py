"""Decide whether a caller may request one resource+permission, and under which flow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lapse_common.pb.lapse.v1 import events_pb2
from lapse_common.refusals import Refusal, Refused

from lapse_approval.flows import Catalog, Flow, format_duration


@dataclass(frozen=True)
class Allowed:
    flow: Flow
    agent_id: str
    duration: timedelta


def check_request(
    *,
    catalog: Catalog,
    subject: str,
    groups: tuple[str, ...],
    integration_id: str,
    resource: str,
    permission: str,
    principal: str,
    duration: timedelta | None,
    justification: str,
    now: datetime,
    check_window: bool = True,
) -> Allowed:
    integration = catalog.integrations.get(integration_id)
    if integration is None:
        raise Refused(Refusal.NOT_FOUND, f"unknown integration {integration_id!r}")
    if resource not in integration.resources:
        raise Refused(
            Refusal.NOT_FOUND, f"integration {integration_id!r} has no resource {resource!r}"
        )
    if permission not in integration.resources[resource]:
        offered = ", ".join(integration.resources[resource])
        raise Refused(
            Refusal.NOT_FOUND,
            f"resource {resource!r} offers no permission {permission!r} (offered: {offered})",
        )
    owners = integration.principals.get(principal)
    if owners is None:
        raise Refused(
            Refusal.NOT_FOUND,
            f"unknown principal {principal!r} in integration {integration_id!r}",
        )
    if subject not in owners:
        raise Refused(
            Refusal.FORBIDDEN, f"{subject} may not receive access as principal {principal!r}"
        )
    flows = [
        flow
        for flow in catalog.flows
        if flow.covers(integration=integration_id, resource=resource, permission=permission)
        and flow.allows_requestor(subject=subject, groups=groups)
    ]
    if not flows:
        raise Refused(
            Refusal.FORBIDDEN,
            f"no Access Flow lets {subject} request {permission} on {integration_id}/{resource}",
        )
    # Several flows may match; the one allowing the longest access serves the request so
    # a stricter flow never shadows a more generous one the admin also granted.
    flow = max(flows, key=lambda f: f.max_duration)
    if duration is not None and duration > flow.max_duration:
        raise Refused(
            Refusal.INVALID,
            f"duration {format_duration(duration)} exceeds the maximum of "
            f"{format_duration(flow.max_duration)} allowed by flow {flow.name!r}",
        )
    if check_window and not flow.open_at(now):
        windows = "; ".join(w.describe() for w in flow.time_windows)
        raise Refused(Refusal.CONFLICT, f"flow {flow.name!r} takes requests only during: {windows}")
    if flow.justification_required and not justification.strip():
        raise Refused(Refusal.INVALID, f"flow {flow.name!r} requires a justification")
    return Allowed(
        flow=flow, agent_id=integration.agent, duration=duration or flow.default_duration
    )


def check_submitted(
    *,
    catalog: Catalog,
    submitted: events_pb2.RequestSubmitted,
    duration: timedelta | None,
    now: datetime,
    check_window: bool = True,
) -> list[Allowed]:
    """Check every item of a submitted request against today's flows, as its requester;
    raises Refused for the first item no flow allows."""
    return [
        check_request(
            catalog=catalog,
            subject=submitted.requester,
            groups=tuple(submitted.requester_groups),
            integration_id=item.integration_id,
            resource=item.resource,
            permission=item.permission,
            principal=item.principal,
            duration=duration,
            justification=submitted.justification,
            now=now,
            check_window=check_window,
        )
        for item in submitted.items
    ]
