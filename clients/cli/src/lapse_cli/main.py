"""`lapse`: request access and follow it from the terminal."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version as package_version
from typing import Annotated

import grpc
import typer
from lapse_common.auth import mint_token
from lapse_common.pb.lapse.v1 import (
    approval_service_pb2,
    approval_service_pb2_grpc,
    common_pb2,
    request_service_pb2,
)
from lapse_common.pb.lapse.v1.request_service_pb2 import AccessRequestView, UnverifiedAccess
from lapse_common.private_files import write_private_file

from lapse_cli import agent_enrollment
from lapse_cli.access_scope_option import SCOPE_HELP, parse_scope
from lapse_cli.approvals import approve, list_approvals, reject
from lapse_cli.audit import audit_app
from lapse_cli.config import CliSettings
from lapse_cli.flows import flows_app
from lapse_cli.lockdowns import lockdown_app
from lapse_cli.paging_options import (
    LimitOption,
    PageTokenOption,
    collect_pages,
    tell_how_to_go_on,
)
from lapse_cli.rendering import as_json, describe_request, grant_status, request_status
from lapse_cli.scoped_revocation import panic, run_scoped_revocation
from lapse_cli.session import call_request_service, fail, metadata, service_channel
from lapse_cli.sre import agents_app, revocations_app

app = typer.Typer(
    help="Lapse: just-in-time access. Request it, watch it, and let it lapse.",
    no_args_is_help=True,
    # --install-completion / --show-completion [bash|zsh|fish|powershell] (README).
    add_completion=True,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"lapse {package_version('lapse-cli')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="print the version of the lapse CLI and exit",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Lapse: just-in-time access. Request it, watch it, and let it lapse."""


requests_app = typer.Typer(help="Inspect or cancel your requests.", no_args_is_help=True)
app.add_typer(requests_app, name="requests")
app.add_typer(revocations_app, name="revocations")
agents_app.command("enroll")(agent_enrollment.enroll)
agents_app.command("rotate-key")(agent_enrollment.rotate_key)
agents_app.command("disable")(agent_enrollment.disable)
app.add_typer(agents_app, name="agents")
access_app = typer.Typer(help="Access that exists (or may exist) in targets.", no_args_is_help=True)
app.add_typer(access_app, name="access")
app.add_typer(flows_app, name="flows")
app.command("approvals")(list_approvals)
app.command("approve")(approve)
app.command("reject")(reject)
app.command("panic")(panic)
app.add_typer(lockdown_app, name="lockdown")
app.add_typer(audit_app, name="audit")

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, option: str = "--for") -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise fail(f"{option} {text!r} is not a duration like 90s, 15m, 4h or 2d", 2)
    return int(match.group(1)) * _UNITS[match.group(2)]


@app.command()
def login(
    dev: Annotated[
        bool, typer.Option("--dev", help="mint a short-lived token from the local dev key")
    ] = False,
    user: Annotated[str, typer.Option(help="subject of the dev token")] = "alice",
    groups: Annotated[str, typer.Option(help="comma-separated groups")] = "engineering",
    roles: Annotated[str, typer.Option(help="comma-separated roles, e.g. admin,sre")] = "",
    ttl: Annotated[
        str, typer.Option(help="token lifetime (at most LAPSE_AUTH_MAX_TOKEN_LIFETIME_SECONDS)")
    ] = "8h",
) -> None:
    """Store a bearer token for the other commands."""
    settings = CliSettings()
    if not dev:
        raise fail(
            "only --dev login is available: tokens from your identity provider can be "
            "passed with LAPSE_TOKEN",
            2,
        )
    lifetime = parse_duration(ttl, option="--ttl")
    longest = settings.auth_max_token_lifetime_seconds
    if not 0 < lifetime <= longest:
        raise fail(
            f"--ttl {ttl} is longer than the services accept: at most {longest} s "
            f"({longest // 3600}h; LAPSE_AUTH_MAX_TOKEN_LIFETIME_SECONDS)"
            if lifetime
            else "--ttl must be longer than 0s",
            2,
        )
    if not settings.dev_token_key_file.exists():
        raise fail(
            f"dev key {settings.dev_token_key_file} not found (set LAPSE_DEV_TOKEN_KEY_FILE; "
            "`make up` creates it)"
        )
    token = mint_token(
        private_key_pem=settings.dev_token_key_file.read_bytes(),
        subject=user,
        groups=[g for g in groups.split(",") if g],
        roles=[r for r in roles.split(",") if r],
        ttl_seconds=lifetime,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
    )
    write_private_file(settings.token_file, token.encode())
    typer.echo(f"logged in as {user} (dev token, {ttl}); token in {settings.token_file}")


@app.command()
def request(
    target: Annotated[str, typer.Argument(help="INTEGRATION/RESOURCE, e.g. demo-pg/appdb")],
    permission: Annotated[str, typer.Argument(help="permission level, e.g. read")],
    principal: Annotated[
        str, typer.Option("--as", help="login in the target that gets the access")
    ],
    duration: Annotated[
        str, typer.Option("--for", help="how long, e.g. 30m (default: the flow's)")
    ] = "",
    reason: Annotated[str, typer.Option(help="justification")] = "",
    wait: Annotated[bool, typer.Option(help="wait until the access is ACTIVE (or failed)")] = False,
    timeout: Annotated[int, typer.Option(help="seconds to --wait")] = 60,
    output_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Ask for access to a resource for a while."""
    settings = CliSettings()
    if target.count("/") != 1 or not all(target.split("/")):
        raise fail(f"target {target!r} must look like INTEGRATION/RESOURCE", 2)
    integration_id, resource = target.split("/")
    seconds = parse_duration(duration) if duration else 0
    response = call_request_service(
        settings,
        lambda stub, md: stub.SubmitRequest(
            request_service_pb2.SubmitRequestRequest(
                integration_id=integration_id,
                resource=resource,
                permission=permission,
                principal=principal,
                duration_seconds=seconds,
                justification=reason,
            ),
            metadata=md,
        ),
    )
    view = response.request
    if wait:
        view = _wait_for_grant(settings, view.request_id, timeout=timeout, quiet=output_json)
    if output_json:
        typer.echo(json.dumps(as_json(view), indent=2))
    else:
        typer.echo(describe_request(view, history=False))


def _wait_for_grant(
    settings: CliSettings, request_id: str, *, timeout: int, quiet: bool
) -> request_service_pb2.AccessRequestView:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        view: request_service_pb2.AccessRequestView = call_request_service(
            settings,
            lambda stub, md: stub.GetRequest(
                request_service_pb2.GetRequestRequest(request_id=request_id), metadata=md
            ),
        )
        state = request_status(view.status) + "".join(
            f" {grant_status(g.status)}" for g in view.grants
        )
        if state != last and not quiet:
            typer.echo(f"... {state}", err=True)
            last = state
        settled = view.status != common_pb2.REQUEST_STATUS_PENDING_APPROVAL and (
            view.status != common_pb2.REQUEST_STATUS_APPROVED
            or (
                view.grants
                and all(g.status != common_pb2.GRANT_STATUS_GRANTING for g in view.grants)
            )
        )
        if settled:
            return view
        if time.monotonic() > deadline:
            raise fail(
                f"still {state} after {timeout}s; follow it with `lapse requests show {request_id}`"
            )
        time.sleep(0.3)


@app.command()
def activity(
    all_users: Annotated[
        bool, typer.Option("--all", help="everyone's activity (admin, sre, auditor)")
    ] = False,
    limit: LimitOption = 20,
    page_token: PageTokenOption = "",
    output_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Your requests and grants with their statuses, newest first."""
    settings = CliSettings()

    def fetch(token: str, size: int) -> tuple[Sequence[AccessRequestView], str]:
        page = call_request_service(
            settings,
            lambda stub, md: stub.ListActivity(
                request_service_pb2.ListActivityRequest(
                    all_users=all_users, page_size=size, page_token=token
                ),
                metadata=md,
            ),
        )
        return page.requests, page.next_page_token

    requests, next_token = collect_pages(fetch, limit=limit, page_token=page_token)
    if output_json:
        typer.echo(json.dumps([as_json(v) for v in requests], indent=2))
        tell_how_to_go_on(next_token)
        return
    if not requests:
        typer.echo("no requests yet")
    for view in requests:
        typer.echo(describe_request(view, history=False))
    tell_how_to_go_on(next_token)


@requests_app.command("show")
def show_request(
    request_id: str,
    output_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """One request with the full history of its grants."""
    settings = CliSettings()
    view = call_request_service(
        settings,
        lambda stub, md: stub.GetRequest(
            request_service_pb2.GetRequestRequest(request_id=request_id), metadata=md
        ),
    )
    typer.echo(
        json.dumps(as_json(view), indent=2) if output_json else describe_request(view, history=True)
    )


@requests_app.command("cancel")
def cancel_request(request_id: str, reason: Annotated[str, typer.Option(help="why")] = "") -> None:
    """Withdraw a request that is still pending approval."""
    settings = CliSettings()
    view = call_request_service(
        settings,
        lambda stub, md: stub.CancelRequest(
            request_service_pb2.CancelRequestRequest(request_id=request_id, reason=reason),
            metadata=md,
        ),
    )
    typer.echo(describe_request(view, history=False))


@access_app.command("unverified")
def unverified_access(
    limit: LimitOption = 100,
    page_token: PageTokenOption = "",
    output_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Grants whose revocation was canceled: the access may still exist in the target."""
    settings = CliSettings()

    def fetch(token: str, size: int) -> tuple[Sequence[UnverifiedAccess], str]:
        page = call_request_service(
            settings,
            lambda stub, md: stub.ListUnverifiedAccess(
                request_service_pb2.ListUnverifiedAccessRequest(page_size=size, page_token=token),
                metadata=md,
            ),
        )
        return page.grants, page.next_page_token

    grants, next_token = collect_pages(fetch, limit=limit, page_token=page_token)
    if output_json:
        typer.echo(json.dumps([as_json(g) for g in grants], indent=2))
        tell_how_to_go_on(next_token)
        return
    if not grants:
        typer.echo("no unverified standing access")
    for entry in grants:
        spec = entry.grant.spec
        typer.echo(
            f"{entry.grant.grant_id}  REVOKE_CANCELED  {spec.integration_id}/{spec.resource} "
            f"{spec.permission} as {spec.principal}  (requested by {entry.requester}); "
            "may still exist in the target: remove it by hand"
        )
    tell_how_to_go_on(next_token)


@app.command("extend")
def extend(
    request_id: str,
    duration: Annotated[
        str, typer.Option("--for", help="how much longer, e.g. 30m (default: the flow's)")
    ] = "",
    grant: Annotated[
        str, typer.Option(help="which grant of the request (default: its first)")
    ] = "",
) -> None:
    """Ask for more time on an active grant; the flow's extension limits apply."""
    settings = CliSettings()
    grant_id = grant or next((g.grant_id for g in request_view(settings, request_id).grants), "")
    if not grant_id:
        raise fail(f"request {request_id} has no grant yet")
    with service_channel(settings.approval_address) as channel:
        try:
            response = approval_service_pb2_grpc.ApprovalServiceStub(channel).ExtendGrant(
                approval_service_pb2.ExtendGrantRequest(
                    request_id=request_id,
                    grant_id=grant_id,
                    extend_by_seconds=parse_duration(duration) if duration else 0,
                ),
                metadata=metadata(settings),
            )
        except grpc.RpcError as error:
            raise fail(f"{error.code().name}: {error.details()}") from error
    if response.status == "PENDING_APPROVAL":
        typer.echo(
            f"{grant_id}: extension by {response.extend_by_seconds}s waiting for approval as "
            f"{response.extension_id} (the flow's approvers decide it with `lapse approve "
            f"{response.extension_id}`); the grant keeps its expiry until then"
        )
        return
    typer.echo(
        f"{grant_id}: extended by {response.extend_by_seconds}s "
        f"(extension {response.extension_number}, {response.extensions_left} left)"
    )


@app.command("revoke")
def revoke(
    target: Annotated[
        str, typer.Argument(help="a grant id, or a request id (its grants); or use --scope")
    ] = "",
    reason: Annotated[str, typer.Option(help="why (audited)")] = "",
    scope: Annotated[list[str], typer.Option("--scope", help=SCOPE_HELP)] = [],  # noqa: B006
    approved_by_me: Annotated[
        bool, typer.Option("--approved-by-me", help="grants of requests you approved")
    ] = False,
    everything: Annotated[bool, typer.Option("--everything", help="all access (admin)")] = False,
    end_sessions: Annotated[
        bool, typer.Option("--end-sessions", help="also end the principals' open sessions")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="skip the confirmation")] = False,
) -> None:
    """End access now instead of waiting for it to lapse: your own, what you approved, or
    (admins) anyone's; one grant, or every grant in a scope."""
    if not target and (scope or approved_by_me or everything):
        run_scoped_revocation(
            scope=parse_scope(scope, everything=everything),
            reason=reason,
            approved_by_me=approved_by_me,
            end_sessions=end_sessions,
            assume_yes=yes,
        )
        return
    if not target:
        raise fail("say what to revoke: a grant or request id, or --scope / --approved-by-me", 2)
    settings = CliSettings()
    grant_ids = [target]
    if target.startswith("req-"):
        grant_ids = [g.grant_id for g in request_view(settings, target).grants]
        if not grant_ids:
            raise fail(f"request {target} has no grant to revoke")
    for grant_id in grant_ids:
        revoke_one = request_service_pb2.RevokeGrantRequest(grant_id=grant_id, reason=reason)
        view: request_service_pb2.GrantView = call_request_service(
            settings,
            lambda stub, md: stub.RevokeGrant(revoke_one, metadata=md),  # noqa: B023
        )
        typer.echo(f"{view.grant_id}: revocation requested; follow it with `lapse activity`")


@requests_app.command("list")
def list_requests(
    all_users: Annotated[
        bool, typer.Option("--all", help="everyone's (admin, sre, auditor)")
    ] = False,
    limit: Annotated[int, typer.Option(help="how many requests")] = 20,
    output_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Your requests with their grants (same as `lapse activity`)."""
    activity(all_users=all_users, limit=limit, output_json=output_json)


def main() -> None:
    try:
        # One name however it is started (`python -m lapse_cli` too), so the completion
        # script and its _LAPSE_COMPLETE variable are the same.
        app(prog_name="lapse")
    except KeyboardInterrupt:
        sys.exit(130)


def request_view(settings: CliSettings, request_id: str) -> request_service_pb2.AccessRequestView:
    view: request_service_pb2.AccessRequestView = call_request_service(
        settings,
        lambda stub, md: stub.GetRequest(
            request_service_pb2.GetRequestRequest(request_id=request_id), metadata=md
        ),
    )
    return view
