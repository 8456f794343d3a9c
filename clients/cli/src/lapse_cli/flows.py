"""`lapse flows validate|apply|list|show`: Access Flows as code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import grpc
import typer
from lapse_common.pb.lapse.v1 import approval_service_pb2, approval_service_pb2_grpc

from lapse_cli.config import CliSettings
from lapse_cli.paging_options import collect_pages
from lapse_cli.rendering import as_json
from lapse_cli.session import fail, metadata, service_channel

flows_app = typer.Typer(
    help="Access Flows as code: validate, apply, list, show.", no_args_is_help=True
)
FilesArgument = Annotated[
    list[Path], typer.Argument(help="flow files (YAML); all of them make the new set")
]


def _stub(channel: grpc.Channel) -> approval_service_pb2_grpc.ApprovalServiceStub:
    return approval_service_pb2_grpc.ApprovalServiceStub(channel)


def _files(paths: list[Path]) -> approval_service_pb2.ApplyFlowsRequest:
    request = approval_service_pb2.ApplyFlowsRequest()
    for path in paths:
        try:
            request.files.add(name=str(path), content=path.read_text())
        except OSError as error:
            raise fail(f"cannot read {path}: {error}", 2) from error
    return request


def _call(
    method: str, request: approval_service_pb2.ApplyFlowsRequest
) -> approval_service_pb2.ApplyFlowsResponse:
    settings = CliSettings()
    with service_channel(settings.approval_address) as channel:
        try:
            response: approval_service_pb2.ApplyFlowsResponse = getattr(_stub(channel), method)(
                request, metadata=metadata(settings)
            )
            return response
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                typer.echo("the flow files are invalid; nothing was changed:", err=True)
                for problem in (error.details() or "").splitlines():
                    typer.echo(f"  - {problem}", err=True)
                raise typer.Exit(1) from error
            raise fail(f"{error.code().name}: {error.details()}") from error


@flows_app.command("validate")
def validate(files: FilesArgument) -> None:
    """Check flow files without applying them (role admin; errors name file, flow and
    field)."""
    response = _call("ValidateFlows", _files(files))
    typer.echo(f"valid: {response.flows} flow(s), {response.integrations} integration(s)")


@flows_app.command("apply")
def apply(files: FilesArgument) -> None:
    """Make these files the flows in force (role admin). What they no longer allow is
    rejected (pending), revoked or shortened (active)."""
    response = _call("ApplyFlows", _files(files))
    typer.echo(
        f"applied: {response.flows} flow(s), {response.integrations} integration(s); "
        f"pending requests rejected: {response.pending_rejected}, approvals withdrawn "
        f"(grants revoked): {response.approvals_withdrawn}, "
        f"shortened: {response.approvals_shortened}"
    )


EVERY_FLOW = 100_000


def _flows() -> list[approval_service_pb2.FlowView]:
    settings = CliSettings()
    with service_channel(settings.approval_address) as channel:

        def fetch(token: str, size: int) -> tuple[Sequence[approval_service_pb2.FlowView], str]:
            page = _stub(channel).ListFlows(
                approval_service_pb2.ListFlowsRequest(page_size=size, page_token=token),
                metadata=metadata(settings),
            )
            return page.flows, page.next_page_token

        try:
            # Flows are policy written by hand: always every page.
            return collect_pages(fetch, limit=EVERY_FLOW, page_token="")[0]
        except grpc.RpcError as error:
            raise fail(f"{error.code().name}: {error.details()}") from error


@flows_app.command("list")
def list_flows(output_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The flows in force."""
    views = _flows()
    if output_json:
        typer.echo(
            json.dumps(
                [as_json(v) for v in views],
                indent=2,
            )
        )
        return
    for view in views:
        typer.echo(
            f"{view.name:<28} {view.approval:<8} {view.integration_id}/{','.join(view.resources)} "
            f"{','.join(view.permissions)}  max {view.max_duration_seconds}s"
        )


@flows_app.command("show")
def show(name: str) -> None:
    """One flow in full."""
    matches = [v for v in _flows() if v.name == name]
    if not matches:
        raise fail(f"no flow named {name!r}")
    for view in matches:
        typer.echo(
            json.dumps(
                as_json(view),
                indent=2,
            )
        )
