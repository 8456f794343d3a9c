"""`lapse lockdown list|set|lift` (admin): refuse new requests in a scope during an incident."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Annotated

import typer
from lapse_common.pb.lapse.v1 import request_service_pb2

from lapse_cli.access_scope_option import SCOPE_HELP, describe, parse_scope
from lapse_cli.config import CliSettings
from lapse_cli.paging_options import (
    LimitOption,
    PageTokenOption,
    collect_pages,
    tell_how_to_go_on,
)
from lapse_cli.session import call_request_service, fail

lockdown_app = typer.Typer(
    help="Lockdowns (admin): new requests in their scope are refused until lifted.",
    no_args_is_help=True,
)


def _line(lockdown: request_service_pb2.Lockdown) -> str:
    since = lockdown.set_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    state = f"lifted by {lockdown.lifted_by}" if lockdown.lifted_by else "IN FORCE"
    incident = f"  incident {lockdown.incident_id}" if lockdown.incident_id else ""
    return (
        f"{lockdown.lockdown_id}  {state}  {describe(lockdown.scope)}  set by {lockdown.set_by} "
        f"at {since}{incident}  reason: {lockdown.reason}"
    )


@lockdown_app.command("list")
def list_lockdowns(
    all_: Annotated[bool, typer.Option("--all", help="include lifted ones")] = False,
    limit: LimitOption = 100,
    page_token: PageTokenOption = "",
) -> None:
    """Lockdowns in force."""
    settings = CliSettings()

    def fetch(token: str, size: int) -> tuple[Sequence[request_service_pb2.Lockdown], str]:
        page: request_service_pb2.ListLockdownsResponse = call_request_service(
            settings,
            lambda stub, md: stub.ListLockdowns(
                request_service_pb2.ListLockdownsRequest(
                    include_lifted=all_, page_size=size, page_token=token
                ),
                metadata=md,
            ),
        )
        return page.lockdowns, page.next_page_token

    lockdowns, next_token = collect_pages(fetch, limit=limit, page_token=page_token)
    if not lockdowns:
        typer.echo("no lockdown in force")
    for lockdown in lockdowns:
        typer.echo(_line(lockdown))
    tell_how_to_go_on(next_token)


@lockdown_app.command("set")
def set_lockdown(
    reason: Annotated[str, typer.Option(help="why (required, audited)")],
    scope: Annotated[list[str], typer.Option("--scope", help=SCOPE_HELP)] = [],  # noqa: B006
    everything: Annotated[bool, typer.Option("--everything", help="all requests")] = False,
) -> None:
    """Refuse new requests in a scope (without revoking what exists: see `lapse panic`)."""
    if not reason.strip():
        raise fail("--reason is required", 2)
    asked = request_service_pb2.SetLockdownRequest(
        scope=parse_scope(scope, everything=everything), reason=reason
    )
    lockdown: request_service_pb2.Lockdown = call_request_service(
        CliSettings(), lambda stub, md: stub.SetLockdown(asked, metadata=md)
    )
    typer.echo(_line(lockdown))


@lockdown_app.command("lift")
def lift_lockdown(
    lockdown_id: str,
    reason: Annotated[str, typer.Option(help="why (audited)")] = "",
) -> None:
    """Accept requests in the lockdown's scope again."""
    asked = request_service_pb2.LiftLockdownRequest(lockdown_id=lockdown_id, reason=reason)
    lockdown: request_service_pb2.Lockdown = call_request_service(
        CliSettings(), lambda stub, md: stub.LiftLockdown(asked, metadata=md)
    )
    typer.echo(_line(lockdown))
