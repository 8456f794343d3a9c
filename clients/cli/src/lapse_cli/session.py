"""The caller's token and how the CLI reports failures."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import grpc
import typer
from lapse_common.grpc_transport import GrpcTransportSettings, TransportMisconfigured, open_channel
from lapse_common.pb.lapse.v1 import request_service_pb2_grpc

from lapse_cli.config import CliSettings

T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def token(settings: CliSettings) -> str:
    value = os.environ.get("LAPSE_TOKEN") or (
        settings.token_file.read_text().strip() if settings.token_file.exists() else ""
    )
    if not value:
        raise fail("not logged in: run `lapse login --dev` (or set LAPSE_TOKEN)")
    return value


def metadata(settings: CliSettings) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token(settings)}"),)


def service_channel(address: str) -> grpc.Channel:
    """A channel to a Lapse service: TLS verified against LAPSE_GRPC_TLS_CAFILE (plaintext
    only with LAPSE_GRPC_ALLOW_PLAINTEXT=true, for development)."""
    try:
        return open_channel(address, GrpcTransportSettings())
    except TransportMisconfigured as error:
        raise fail(str(error), 2) from error


def call_request_service(
    settings: CliSettings,
    invoke: Callable[[request_service_pb2_grpc.RequestServiceStub, tuple[tuple[str, str], ...]], T],
) -> T:
    """One call to the request service; failures become a clear message and exit code 1."""
    with service_channel(settings.request_address) as channel:
        try:
            return invoke(request_service_pb2_grpc.RequestServiceStub(channel), metadata(settings))
        except grpc.RpcError as error:
            raise request_service_failure(error, settings) from error


def request_service_failure(error: grpc.RpcError, settings: CliSettings) -> typer.Exit:
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return fail(
            f"cannot reach the request service at {settings.request_address} "
            "(is Lapse running? `make up`; does LAPSE_GRPC_TLS_CAFILE name the CA that signed "
            f"its certificate?): {error.details()}"
        )
    return fail(f"{error.code().name}: {error.details()}")
