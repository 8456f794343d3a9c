"""`lapse revocations ...` and `lapse agents`: SRE tooling for revocations that got stuck."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Annotated

import grpc
import typer
from lapse_common.pb.lapse.v1 import common_pb2, revoker_service_pb2, revoker_service_pb2_grpc

from lapse_cli.config import CliSettings
from lapse_cli.paging_options import (
    LimitOption,
    PageTokenOption,
    collect_pages,
    tell_how_to_go_on,
)
from lapse_cli.rendering import as_json
from lapse_cli.session import fail, metadata, service_channel

revocations_app = typer.Typer(
    help="Stuck revocations: list, inspect, replay or cancel them (role sre or admin).",
    no_args_is_help=True,
)
agents_app = typer.Typer(
    help="Connector agents as the revoker sees them.", invoke_without_command=True
)

CANCEL_WARNING = (
    "Canceling does NOT remove the access: it may still exist in the target.\n"
    "Lapse could not verify that it is gone. The grant will show as REVOKE_CANCELED and stay\n"
    "listed as unverified standing access (`lapse access unverified`) until someone removes\n"
    "it by hand."
)
_AGE = re.compile(r"^(\d+)([smhd])$")


def _stub(channel: grpc.Channel) -> revoker_service_pb2_grpc.RevokerServiceStub:
    return revoker_service_pb2_grpc.RevokerServiceStub(channel)


def _rpc_error(error: grpc.RpcError, settings: CliSettings) -> typer.Exit:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return fail(f"cannot reach the revoker at {settings.revoker_address} (is Lapse running?)")
    return fail(f"{code.name}: {error.details()}")


def _spec(spec: common_pb2.GrantSpec) -> str:
    target = f"{spec.integration_id}/{spec.resource} {spec.permission}"
    return f"{target} as {spec.principal} (agent {spec.agent_id})"


def _when(view: revoker_service_pb2.RevocationView) -> str:
    return view.due_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@revocations_app.command("stuck")
def list_stuck(
    agent: Annotated[str, typer.Option(help="only revocations bound for this agent")] = "",
    integration: Annotated[str, typer.Option(help="only this integration")] = "",
    older_than: Annotated[
        str, typer.Option(help="only those first due at least this long ago, e.g. 10m")
    ] = "",
    limit: LimitOption = 200,
    page_token: PageTokenOption = "",
    output_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Revocations whose retries are exhausted (the grant is REVOKING + stuck), longest
    stuck first."""
    settings = CliSettings()
    seconds = 0
    if older_than:
        match = _AGE.match(older_than)
        if not match:
            raise fail(f"--older-than {older_than!r} is not a duration like 90s, 10m, 4h", 2)
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    with service_channel(settings.revoker_address) as channel:

        def fetch(
            token: str, size: int
        ) -> tuple[Sequence[revoker_service_pb2.RevocationView], str]:
            page = _stub(channel).ListStuckRevocations(
                revoker_service_pb2.ListStuckRevocationsRequest(
                    agent_id=agent,
                    integration_id=integration,
                    min_age_seconds=seconds,
                    page_size=size,
                    page_token=token,
                ),
                metadata=metadata(settings),
            )
            return page.revocations, page.next_page_token

        try:
            revocations, next_token = collect_pages(fetch, limit=limit, page_token=page_token)
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error
    if output_json:
        typer.echo(json.dumps([as_json(r) for r in revocations], indent=2))
        tell_how_to_go_on(next_token)
        return
    if not revocations:
        typer.echo("no stuck revocations")
    for view in revocations:
        typer.echo(
            f"{view.grant_id}  {_spec(view.spec)}  due {_when(view)}  attempts={view.attempt}"
        )
        typer.echo(f"    last error: {view.last_error}")
    tell_how_to_go_on(next_token)


@revocations_app.command("show")
def show(grant_id: str, output_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One revocation with its attempt history."""
    settings = CliSettings()
    with service_channel(settings.revoker_address) as channel:
        try:
            view = _stub(channel).GetRevocation(
                revoker_service_pb2.GetRevocationRequest(grant_id=grant_id),
                metadata=metadata(settings),
            )
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error
    if output_json:
        typer.echo(
            json.dumps(
                as_json(view),
                indent=2,
            )
        )
        return
    stuck = " (stuck)" if view.stuck else ""
    typer.echo(f"{view.grant_id}  {view.state}{stuck}  epoch {view.epoch}  {_spec(view.spec)}")
    typer.echo(f"  requester {view.requester}  due {_when(view)}")
    if view.last_error:
        typer.echo(f"  last error: {view.last_error}")
    if view.resolved_by:
        why = view.resolution_reason or "(no reason given)"
        typer.echo(f"  resolved by {view.resolved_by}: {why}")
    for attempt in view.attempts:
        sent = attempt.sent_at.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S")
        if not attempt.HasField("finished_at"):
            typer.echo(f"  attempt {attempt.attempt}: sent {sent}  still running")
            continue
        finished = attempt.finished_at.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S")
        outcome = f"failed: {attempt.error}" if attempt.error else "ok"
        typer.echo(f"  attempt {attempt.attempt}: sent {sent} finished {finished}  {outcome}")


def _follow(progress: Iterable[revoker_service_pb2.RevocationProgress], verb: str) -> None:
    failed = 0
    last = None
    for step in progress:
        last = step
        mark = "ok  " if step.ok else "FAIL"
        typer.echo(f"[{step.done}/{step.total}] {mark} {step.grant_id}: {step.detail}")
        failed += 0 if step.ok else 1
    if last is None:
        typer.echo(f"nothing to {verb}")
        return
    typer.echo(f"{verb}: {last.total - failed} of {last.total} done, {failed} refused")
    if failed:
        raise typer.Exit(1)


@revocations_app.command("replay")
def replay(
    grant_ids: Annotated[list[str] | None, typer.Argument(help="grant ids to replay")] = None,
    agent: Annotated[
        str, typer.Option(help="replay every stuck revocation bound for this agent")
    ] = "",
    reason: Annotated[str, typer.Option(help="why (audited)")] = "",
) -> None:
    """Re-issue stuck revocations with a new epoch; normal retries apply again."""
    settings = CliSettings()
    if not grant_ids and not agent:
        raise fail("name grant ids or --agent", 2)
    with service_channel(settings.revoker_address) as channel:
        try:
            _follow(
                _stub(channel).ReplayRevocations(
                    revoker_service_pb2.ReplayRevocationsRequest(
                        grant_ids=grant_ids or [], agent_id=agent, reason=reason
                    ),
                    metadata=metadata(settings),
                ),
                "replay",
            )
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error


@revocations_app.command("cancel")
def cancel(
    grant_ids: Annotated[list[str], typer.Argument(help="grant ids to mark canceled")],
    reason: Annotated[str, typer.Option(help="why (required, audited)")],
    yes: Annotated[bool, typer.Option("--yes", help="skip the confirmation (automation)")] = False,
) -> None:
    """Mark stuck revocations as canceled (REVOKE_CANCELED). Does not remove the access."""
    if not reason.strip():
        raise fail("--reason is required: say why the access may stay (it is audited)", 2)
    settings = CliSettings()
    typer.echo(f"WARNING: {CANCEL_WARNING}", err=True)
    if not yes and not typer.confirm(
        f"Mark {len(grant_ids)} revocation(s) as canceled?", default=False
    ):
        raise fail("nothing canceled", 1)
    with service_channel(settings.revoker_address) as channel:
        try:
            _follow(
                _stub(channel).CancelRevocations(
                    revoker_service_pb2.CancelRevocationsRequest(
                        grant_ids=grant_ids, reason=reason, acknowledge_access_may_remain=True
                    ),
                    metadata=metadata(settings),
                ),
                "cancel",
            )
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error


@agents_app.callback()
def agents(
    context: typer.Context,
    limit: LimitOption = 1000,
    page_token: PageTokenOption = "",
    output_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Agents with heartbeat age, online state and revocations in flight, queued and stuck;
    enroll, rotate-key and disable manage their identities (role admin)."""
    if context.invoked_subcommand is not None:
        return
    settings = CliSettings()
    with service_channel(settings.revoker_address) as channel:

        def fetch(token: str, size: int) -> tuple[Sequence[revoker_service_pb2.AgentView], str]:
            page = _stub(channel).ListAgents(
                revoker_service_pb2.ListAgentsRequest(page_size=size, page_token=token),
                metadata=metadata(settings),
            )
            return page.agents, page.next_page_token

        try:
            views, next_token = collect_pages(fetch, limit=limit, page_token=page_token)
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error
    if output_json:
        typer.echo(json.dumps([as_json(a) for a in views], indent=2))
        tell_how_to_go_on(next_token)
        return
    if not views:
        typer.echo("no agents seen yet")
    for agent in views:
        state = "online " if agent.online else "OFFLINE"
        age = (
            f"{agent.heartbeat_age_seconds:.0f}s ago"
            if agent.HasField("last_heartbeat_at")
            else "never"
        )
        typer.echo(
            f"{agent.agent_id:<24} {state}  last heartbeat {age:<10} in flight {agent.in_flight}  "
            f"queued {agent.queued}  stuck {agent.stuck}"
        )
    tell_how_to_go_on(next_token)
