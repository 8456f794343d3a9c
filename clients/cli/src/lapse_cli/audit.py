"""`lapse audit ...`: list, verify, checkpoint and export the audit log (roles admin, sre
or auditor; the audit service decides)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import grpc
import typer
from lapse_common.audit_checkpoints import (
    CheckpointInvalid,
    load_public_key,
    parse_checkpoint,
    verify_checkpoint,
)
from lapse_common.pb.lapse.v1 import audit_service_pb2, audit_service_pb2_grpc

from lapse_cli.audit_ocsf import lapse_fields, to_ocsf
from lapse_cli.config import CliSettings
from lapse_cli.session import fail, metadata, service_channel

audit_app = typer.Typer(
    help="The audit log: list, verify against signed checkpoints, export (admin, sre, auditor).",
    no_args_is_help=True,
)
# The largest page the service serves; exports use it to make the fewest calls.
MAX_PAGE_SIZE = 1000
# How often a long export reports its progress on stderr.
PROGRESS_EVERY_SECONDS = 2.0


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    ocsf = "ocsf"


RequestOption = Annotated[str, typer.Option("--request", help="only this request id")]
GrantOption = Annotated[str, typer.Option("--grant", help="only this grant id")]
TypeOption = Annotated[
    str, typer.Option("--type", help="only this event type, e.g. GrantStatusChanged")
]
ActorOption = Annotated[
    str, typer.Option("--actor", help="only events naming this person (requester, actor, ...)")
]
SinceOption = Annotated[
    str, typer.Option("--since", help="only events that occurred at or after (ISO 8601, UTC)")
]
UntilOption = Annotated[
    str, typer.Option("--until", help="only events that occurred before (ISO 8601, UTC)")
]


def _rpc_error(error: grpc.RpcError, settings: CliSettings) -> typer.Exit:
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return fail(
            f"cannot reach the audit service at {settings.audit_address} (is Lapse running?)"
        )
    return fail(f"{error.code().name}: {error.details()}")


@contextlib.contextmanager
def _audit(settings: CliSettings) -> Iterator[audit_service_pb2_grpc.AuditServiceStub]:
    with service_channel(settings.audit_address) as channel:
        try:
            yield audit_service_pb2_grpc.AuditServiceStub(channel)
        except grpc.RpcError as error:
            raise _rpc_error(error, settings) from error


def _instant(option: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r} is not an ISO 8601 time like 2025-03-01T12:00", 2) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _query(
    *, request: str, grant: str, kind: str, actor: str, since: str, until: str, page_size: int
) -> audit_service_pb2.ListAuditEventsRequest:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise fail(f"--page-size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}", 2)
    query = audit_service_pb2.ListAuditEventsRequest(
        request_id=request,
        grant_id=grant,
        type=kind if not kind or "." in kind else f"lapse.v1.{kind}",
        actor=actor,
        page_size=page_size,
    )
    after, before = _instant("--since", since), _instant("--until", until)
    if after is not None:
        query.occurred_after.FromDatetime(after)
    if before is not None:
        query.occurred_before.FromDatetime(before)
    return query


def _pages(
    stub: audit_service_pb2_grpc.AuditServiceStub,
    query: audit_service_pb2.ListAuditEventsRequest,
    settings: CliSettings,
) -> Iterator[audit_service_pb2.ListAuditEventsResponse]:
    """Every page, following the page tokens."""
    while True:
        page: audit_service_pb2.ListAuditEventsResponse = stub.ListEvents(
            query, metadata=metadata(settings)
        )
        yield page
        if not page.next_page_token:
            return
        query.page_token = page.next_page_token


def _line(event: audit_service_pb2.AuditEvent) -> str:
    when = event.occurred_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")
    ids = " ".join(
        part
        for part in (
            f"request={event.request_id}" if event.request_id else "",
            f"grant={event.grant_id}" if event.grant_id else "",
        )
        if part
    )
    return f"{event.sequence:>8}  {when}  {event.type.removeprefix('lapse.v1.'):<28} {ids}"


@audit_app.command("list")
def list_events(
    request: RequestOption = "",
    grant: GrantOption = "",
    kind: TypeOption = "",
    actor: ActorOption = "",
    since: SinceOption = "",
    until: UntilOption = "",
    page_size: Annotated[int, typer.Option(help="events per page (at most 1000)")] = 100,
    page_token: Annotated[str, typer.Option(help="go on from a previous page")] = "",
    every_page: Annotated[bool, typer.Option("--all", help="follow every page")] = False,
    output_json: Annotated[bool, typer.Option("--json", help="one JSON object a line")] = False,
) -> None:
    """Audit events in chain order, filtered."""
    settings = CliSettings()
    query = _query(
        request=request,
        grant=grant,
        kind=kind,
        actor=actor,
        since=since,
        until=until,
        page_size=page_size,
    )
    query.page_token = page_token
    shown = 0
    with _audit(settings) as stub:
        for page in _pages(stub, query, settings):
            for event in page.events:
                typer.echo(json.dumps(lapse_fields(event)) if output_json else _line(event))
            shown += len(page.events)
            if not every_page:
                if page.next_page_token:
                    typer.echo(f"more: --page-token {page.next_page_token}", err=True)
                break
    if not shown and not output_json:
        typer.echo("no audit events match", err=True)


@audit_app.command("verify")
def verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="a checkpoint file: the chain must still hold its head"),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="the checkpoint key's public key (PEM): check the signature here too"),
    ] = None,
) -> None:
    """Check the hash chain and signed checkpoints; exit 1 naming the first bad sequence.

    The service compares the chain with the checkpoint given and with those it keeps."""
    settings = CliSettings()
    checkpoint_json = ""
    if checkpoint is not None:
        try:
            checkpoint_json = checkpoint.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise fail(f"cannot read checkpoint {checkpoint}: {error}", 2) from None
        if public_key is not None:
            _check_signature_locally(checkpoint_json, checkpoint, public_key)
    elif public_key is not None:
        raise fail("--public-key checks a --checkpoint: give both", 2)
    with _audit(settings) as stub:
        result: audit_service_pb2.VerifyChainResponse = stub.VerifyChain(
            audit_service_pb2.VerifyChainRequest(checkpoint_json=checkpoint_json),
            metadata=metadata(settings),
        )
    if not result.ok:
        raise fail(
            f"audit chain verification FAILED at sequence {result.first_bad_sequence}: "
            f"{result.detail}"
        )
    typer.echo(
        f"ok: {result.events_checked} events and {result.checkpoints_checked} checkpoint(s); "
        f"head is sequence {result.head_sequence} with hash {result.head_hash}"
    )


def _check_signature_locally(text: str, path: Path, public_key: Path) -> None:
    try:
        key = load_public_key(public_key.read_bytes())
        parsed = parse_checkpoint(text)
        verify_checkpoint(parsed, key, log=parsed.log)
    except OSError as error:
        raise fail(f"cannot read public key {public_key}: {error}", 2) from None
    except (CheckpointInvalid, ValueError) as problem:
        raise fail(f"checkpoint {path}: {problem}") from None


@audit_app.command("checkpoint")
def checkpoint(
    output: Annotated[
        Path | None, typer.Option(help="also write the checkpoint to this file")
    ] = None,
) -> None:
    """Sign the chain head now and print the checkpoint.

    Keep a copy where the database's administrators cannot write."""
    settings = CliSettings()
    with _audit(settings) as stub:
        created: audit_service_pb2.CreateCheckpointResponse = stub.CreateCheckpoint(
            audit_service_pb2.CreateCheckpointRequest(), metadata=metadata(settings)
        )
    if output is not None:
        _write_whole(output, lambda file: file.write(created.checkpoint_json))
    typer.echo(created.checkpoint_json, nl=False)
    state = "written" if created.written else "unchanged since"
    typer.echo(f"{state} {created.file_name}", err=True)


@audit_app.command("export")
def export(
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl: Lapse's fields; ocsf: OCSF 1.x")
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None, typer.Option(help="file to write (default: standard output)")
    ] = None,
    request: RequestOption = "",
    grant: GrantOption = "",
    kind: TypeOption = "",
    actor: ActorOption = "",
    since: SinceOption = "",
    until: UntilOption = "",
) -> None:
    """Every matching event, one JSON object a line, with progress on stderr."""
    settings = CliSettings()
    query = _query(
        request=request,
        grant=grant,
        kind=kind,
        actor=actor,
        since=since,
        until=until,
        page_size=MAX_PAGE_SIZE,
    )
    render = to_ocsf if export_format is ExportFormat.ocsf else lapse_fields

    def write(file: IO[str]) -> int:
        started = last_report = time.monotonic()
        count = 0
        with _audit(settings) as stub:
            for page in _pages(stub, query, settings):
                for event in page.events:
                    file.write(json.dumps(render(event), separators=(",", ":")) + "\n")
                count += len(page.events)
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY_SECONDS:
                    _progress(count, now - started)
                    last_report = now
        _progress(count, time.monotonic() - started, done=True)
        return count

    if output is None:
        write(sys.stdout)
    else:
        _write_whole(output, write)


def _progress(count: int, seconds: float, *, done: bool = False) -> None:
    rate = count / seconds if seconds > 0 else 0.0
    verb = "exported" if done else "exporting:"
    typer.echo(f"{verb} {count} events ({rate:.0f}/s)", err=True)


def _write_whole(path: Path, write: Callable[[IO[str]], object]) -> None:
    """Write to a temporary file beside `path` and rename it only when complete, so an
    interrupted export never looks like a finished one."""
    descriptor, staged = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            write(file)
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise
