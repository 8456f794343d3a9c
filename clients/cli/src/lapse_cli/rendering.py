"""Human and JSON renderings of requests and grants."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2


def request_status(value: int) -> str:
    return common_pb2.RequestStatus.Name(value).removeprefix("REQUEST_STATUS_")  # type: ignore[arg-type]


def grant_status(value: int) -> str:
    return common_pb2.GrantStatus.Name(value).removeprefix("GRANT_STATUS_")  # type: ignore[arg-type]


def _when(stamp: Timestamp) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _remaining(stamp: Timestamp) -> str:
    if stamp.seconds == 0:
        return ""
    left = stamp.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
    seconds = int(left.total_seconds())
    if seconds <= 0:
        return " (expired)"
    return f" ({seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s left)"


def describe_request(view: request_service_pb2.AccessRequestView, *, history: bool) -> str:
    lines = [
        f"{view.request_id}  {request_status(view.status)}  flow={view.flow}  "
        f"by={view.requester}  for={view.duration_seconds}s",
    ]
    if view.decision_detail:
        lines.append(f"  decision: {view.decision_detail}")
    for item in view.items:
        if not any(g.spec.resource == item.resource for g in view.grants):
            lines.append(
                f"  {item.integration_id}/{item.resource} {item.permission} as {item.principal}"
                "  (no grant yet)"
            )
    for grant in view.grants:
        stuck = " STUCK" if grant.stuck else ""
        active = grant.status == common_pb2.GRANT_STATUS_ACTIVE
        left = _remaining(grant.expires_at) if active else ""
        lines.append(
            f"  {grant.grant_id}  {grant_status(grant.status)}{stuck}  "
            f"{grant.spec.integration_id}/{grant.spec.resource} {grant.spec.permission} "
            f"as {grant.spec.principal}  expires {_when(grant.expires_at)}"
            f"{left}"
        )
        if history:
            for step in grant.history:
                detail = f" - {step.detail}" if step.detail else ""
                lines.append(f"      {_when(step.at)}  {step.status:<15} {step.actor}{detail}")
    return "\n".join(lines)


def as_json(message: Message) -> dict[str, object]:
    """A message as --json prints it: every field, zero-valued ones too (an agent with
    nothing in flight says in_flight: 0 instead of leaving the key out)."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
