"""`lapse panic` and `lapse revoke --scope ...`: end every active grant in a scope, with a
preview first, a confirmation, live progress, and a summary that sends anything not
confirmed to the stuck-revocation tooling."""

from __future__ import annotations

from typing import Annotated

import grpc
import typer
from lapse_common.pb.lapse.v1 import common_pb2, request_service_pb2, request_service_pb2_grpc

from lapse_cli.access_scope_option import SCOPE_HELP, describe, parse_scope
from lapse_cli.config import CliSettings
from lapse_cli.session import (
    call_request_service,
    fail,
    metadata,
    request_service_failure,
    service_channel,
)

# Exit code when the run ended with revocations still unconfirmed.
UNCONFIRMED_EXIT = 3


def print_preview(
    preview: request_service_pb2.RevocationPreview,
    scope: common_pb2.AccessScope,
    *,
    panic: bool,
    lockdown: bool,
) -> None:
    what = "PANIC: revoke" if panic else "Revoke"
    typer.echo(
        f"{what} {preview.grants} active grant(s) of {preview.users} user(s) in scope "
        f"{describe(scope)}"
    )
    for agent in preview.per_agent:
        state = "online" if agent.online else "OFFLINE (its revocations will retry, then go stuck)"
        typer.echo(
            f"  {agent.integration_id:<20} agent {agent.agent_id:<20} "
            f"{agent.grants:>6} grant(s)  {state}"
        )
    if panic and preview.pending_requests:
        typer.echo(f"  and cancel {preview.pending_requests} pending request(s) in the scope")
    if panic:
        typer.echo("  open sessions of those principals are ended too")
    if lockdown:
        typer.echo("  then LOCK DOWN the scope: new requests in it are refused until lifted")


def confirm_or_stop(count: int, *, assume_yes: bool, panic: bool) -> None:
    if assume_yes:
        return
    word = "panic" if panic else "revoke"
    try:
        answer = typer.prompt(f"Type '{word}' to revoke {count} grant(s) now", default="")
    except typer.Abort as eof:
        raise fail(
            "not confirmed (no answer): nothing was revoked; --yes skips the question"
        ) from eof
    if answer.strip().lower() != word:
        raise fail("not confirmed: nothing was revoked", 1)


def follow(
    settings: CliSettings, request: request_service_pb2.ScopedRevocationRequest
) -> request_service_pb2.RevocationRunProgress:
    """Stream the run's progress to the terminal; returns the final report."""
    final: request_service_pb2.RevocationRunProgress | None = None
    with service_channel(settings.request_address) as channel:
        stub = request_service_pb2_grpc.RequestServiceStub(channel)
        try:
            for progress in stub.RevokeScope(request, metadata=metadata(settings)):
                if final is None:
                    typer.echo(f"run {progress.run_id}: {progress.grants} grant(s)")
                    if progress.lockdown_id:
                        typer.echo(f"lockdown {progress.lockdown_id} in force")
                typer.echo(
                    f"  sent {progress.sent}/{progress.grants}  confirmed {progress.confirmed}  "
                    f"failed {progress.failed}"
                )
                final = progress
        except grpc.RpcError as error:
            raise request_service_failure(error, settings) from error
    if final is None:
        raise fail("the request service ended the run without reporting it")
    return final


def report(final: request_service_pb2.RevocationRunProgress) -> None:
    typer.echo(final.summary)
    for agent in final.unconfirmed_per_agent:
        typer.echo(
            f"  unconfirmed on {agent.integration_id} (agent {agent.agent_id}"
            f"{'' if agent.online else ', offline'}): {agent.grants}"
        )
    for grant_id in final.unconfirmed_grant_ids[:20]:
        typer.echo(f"  {grant_id}  (lapse revocations show {grant_id})")
    if len(final.unconfirmed_grant_ids) > 20:
        typer.echo(f"  ... and {len(final.unconfirmed_grant_ids) - 20} more")
    if final.unconfirmed_grant_ids:
        raise typer.Exit(UNCONFIRMED_EXIT)


def run_scoped_revocation(
    *,
    scope: common_pb2.AccessScope,
    reason: str,
    approved_by_me: bool = False,
    panic: bool = False,
    lockdown: bool = False,
    end_sessions: bool = False,
    assume_yes: bool = False,
    wait_seconds: int = 0,
) -> None:
    settings = CliSettings()
    asked = request_service_pb2.ScopedRevocationRequest(
        scope=scope,
        approved_by_me=approved_by_me,
        reason=reason,
        panic=panic,
        lockdown=lockdown,
        end_sessions=end_sessions,
        wait_seconds=wait_seconds,
    )
    preview: request_service_pb2.RevocationPreview = call_request_service(
        settings, lambda stub, md: stub.PreviewRevocation(asked, metadata=md)
    )
    print_preview(preview, scope, panic=panic, lockdown=lockdown)
    if preview.grants == 0 and not lockdown:
        typer.echo("nothing active in this scope: nothing to revoke")
        return
    confirm_or_stop(preview.grants, assume_yes=assume_yes, panic=panic)
    asked.preview_fingerprint = preview.fingerprint
    report(follow(settings, asked))


def panic(
    reason: Annotated[str, typer.Option(help="why (required, audited)")],
    scope: Annotated[list[str], typer.Option("--scope", help=SCOPE_HELP)] = [],  # noqa: B006
    everything: Annotated[
        bool, typer.Option("--everything", help="all active access everywhere")
    ] = False,
    lockdown: Annotated[
        bool, typer.Option("--lockdown", help="also refuse new requests in the scope until lifted")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="skip the confirmation (automation)")] = False,
    wait: Annotated[
        int,
        typer.Option(
            help="seconds to follow progress, at most 3600 [default: the request service's, 120]",
            show_default=False,
            min=0,
            max=3600,
        ),
    ] = 0,
) -> None:
    """The panic button (admin): revoke all active access in a scope now, ending sessions."""
    if not reason.strip():
        raise fail("--reason is required: say why (it is audited)", 2)
    run_scoped_revocation(
        scope=parse_scope(scope, everything=everything),
        reason=reason,
        panic=True,
        lockdown=lockdown,
        end_sessions=True,
        assume_yes=yes,
        wait_seconds=wait,
    )
