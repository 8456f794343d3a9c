"""`lapse approvals`, `lapse approve`, `lapse reject`: deciding requests you approve."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Annotated

import grpc
import typer
from lapse_common.pb.lapse.v1 import approval_service_pb2, approval_service_pb2_grpc

from lapse_cli.config import CliSettings
from lapse_cli.paging_options import (
    LimitOption,
    PageTokenOption,
    collect_pages,
    tell_how_to_go_on,
)
from lapse_cli.rendering import as_json
from lapse_cli.session import fail, metadata, service_channel


def _stub(channel: grpc.Channel) -> approval_service_pb2_grpc.ApprovalServiceStub:
    return approval_service_pb2_grpc.ApprovalServiceStub(channel)


def _rpc_error(error: grpc.RpcError, settings: CliSettings) -> typer.Exit:
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return fail(f"cannot reach the approval service at {settings.approval_address}")
    return fail(f"{error.code().name}: {error.details()}")


def list_approvals(
    limit: LimitOption = 100,
    page_token: PageTokenOption = "",
    output_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Requests waiting for your decision, oldest first."""
    settings = CliSettings()
    with service_channel(settings.approval_address) as channel:

        def fetch(
            token: str, size: int
        ) -> tuple[Sequence[approval_service_pb2.PendingApproval], str]:
            page = _stub(channel).ListPendingApprovals(
                approval_service_pb2.ListPendingApprovalsRequest(page_size=size, page_token=token),
                metadata=metadata(settings),
            )
            return page.approvals, page.next_page_token

        try:
            approvals, next_token = collect_pages(fetch, limit=limit, page_token=page_token)
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error
    if output_json:
        typer.echo(json.dumps([as_json(a) for a in approvals], indent=2))
        tell_how_to_go_on(next_token)
        return
    if not approvals:
        typer.echo("nothing waiting for your decision")
    for pending in approvals:
        items = ", ".join(
            f"{i.integration_id}/{i.resource} {i.permission} as {i.principal}"
            for i in pending.items
        )
        expires = pending.expires_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        note = "" if pending.may_decide else "  (you cannot decide this one)"
        lasting = f"for {pending.duration_seconds}s"
        if pending.grant_id:
            lasting = (
                f"EXTENSION of {pending.extends_request_id} grant {pending.grant_id} "
                f"by {pending.extend_by_seconds}s"
            )
        typer.echo(
            f"{pending.request_id}  {pending.requester}  flow={pending.flow}  {items}  "
            f"{lasting}  approvals {len(pending.approvals)}/"
            f"{pending.approvals_needed}  expires {expires}{note}"
        )
        if pending.justification:
            typer.echo(f"    why: {pending.justification}")
    tell_how_to_go_on(next_token)


def _decide(request_id: str, *, approve: bool, reason: str) -> None:
    settings = CliSettings()
    with service_channel(settings.approval_address) as channel:
        try:
            response = _stub(channel).DecideRequest(
                approval_service_pb2.DecideRequestRequest(
                    request_id=request_id, approve=approve, reason=reason
                ),
                metadata=metadata(settings),
            )
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error
    verb = "approval" if approve else "rejection"
    typer.echo(f"{request_id}: {verb} recorded; request is now {response.status}")


def approve(
    request_id: str, reason: Annotated[str, typer.Option(help="why (some flows require it)")] = ""
) -> None:
    """Approve a request waiting for you."""
    _decide(request_id, approve=True, reason=reason)


def reject(
    request_id: str, reason: Annotated[str, typer.Option(help="why (required)")] = ""
) -> None:
    """Reject a request waiting for you; any rejection rejects it."""
    _decide(request_id, approve=False, reason=reason)
