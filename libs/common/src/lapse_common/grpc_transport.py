"""How every Lapse gRPC port is bound and every gRPC channel opened: TLS, message sizes.

Bearer tokens travel on these connections, so a server without a certificate refuses to
start and a client verifies the server's certificate (against LAPSE_GRPC_TLS_CAFILE, or the
system's trusted CAs). Plaintext exists for development only, behind
LAPSE_GRPC_ALLOW_PLAINTEXT=true, and is used only where no TLS material is configured; it is
logged as a WARNING every time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# The largest legitimate request is a 256 KiB flow file; 4 MiB leaves room for the largest
# listing answer while keeping what one call can make a process hold small.
DEFAULT_MAX_MESSAGE_BYTES = 4 * MIB


class GrpcTransportSettings(BaseSettings):
    """LAPSE_GRPC_*: read by every service with a gRPC port and every gRPC client."""

    model_config = SettingsConfigDict(env_prefix="LAPSE_GRPC_", extra="ignore")

    # The server's certificate chain and private key (PEM). A server needs both.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # What clients verify the servers' certificates against; unset: the system's CAs.
    tls_cafile: Path | None = None
    # Development only: serve / connect without TLS where no TLS material is configured.
    allow_plaintext: bool = False
    # Largest message sent or received, on servers and clients alike.
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=MIB, le=64 * MIB)


class TransportMisconfigured(Exception):
    """The transport settings cannot work; the message names the setting to fix."""


def message_size_options(settings: GrpcTransportSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]


def _read(path: Path, variable: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TransportMisconfigured(f"{variable}={path}: cannot read it ({error})") from error
    if b"-----BEGIN " not in data:
        raise TransportMisconfigured(f"{variable}={path}: not a PEM file")
    return data


def _server_credentials(settings: GrpcTransportSettings) -> grpc.ServerCredentials | None:
    certfile, keyfile = settings.tls_certfile, settings.tls_keyfile
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        missing = "LAPSE_GRPC_TLS_CERTFILE" if certfile is None else "LAPSE_GRPC_TLS_KEYFILE"
        raise TransportMisconfigured(
            f"{missing} is not set: a TLS server needs both LAPSE_GRPC_TLS_CERTFILE and "
            "LAPSE_GRPC_TLS_KEYFILE"
        )
    chain = _read(certfile, "LAPSE_GRPC_TLS_CERTFILE")
    key = _read(keyfile, "LAPSE_GRPC_TLS_KEYFILE")
    return grpc.ssl_server_credentials([(key, chain)])


def bind_server_port(server: grpc.aio.Server, address: str, settings: GrpcTransportSettings) -> int:
    """Bind `address` with TLS (or, only with allow_plaintext and no certificate, without);
    returns the bound port. Raises TransportMisconfigured rather than serving in the clear."""
    credentials = _server_credentials(settings)
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    elif settings.allow_plaintext:
        logger.warning(
            "gRPC on %s WITHOUT TLS (LAPSE_GRPC_ALLOW_PLAINTEXT): bearer tokens and every "
            "answer cross the network readable by anyone on it; development only",
            address,
        )
        port = server.add_insecure_port(address)
    else:
        raise TransportMisconfigured(
            f"no TLS certificate for the gRPC port {address}: set LAPSE_GRPC_TLS_CERTFILE and "
            "LAPSE_GRPC_TLS_KEYFILE (python -m lapse_common.local_ca DIR makes a local CA and "
            "certificate), or LAPSE_GRPC_ALLOW_PLAINTEXT=true for development"
        )
    if port == 0:
        raise TransportMisconfigured(f"cannot bind the gRPC port {address}")
    return int(port)


def _channel_credentials(
    address: str, settings: GrpcTransportSettings
) -> grpc.ChannelCredentials | None:
    """None: plaintext (allowed, and no CA configured)."""
    if settings.tls_cafile is None and settings.allow_plaintext:
        logger.warning(
            "gRPC to %s WITHOUT TLS (LAPSE_GRPC_ALLOW_PLAINTEXT): the bearer token crosses "
            "the network readable by anyone on it; development only",
            address,
        )
        return None
    roots = _read(settings.tls_cafile, "LAPSE_GRPC_TLS_CAFILE") if settings.tls_cafile else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def open_channel(address: str, settings: GrpcTransportSettings) -> grpc.Channel:
    """A blocking channel (the CLI's)."""
    credentials = _channel_credentials(address, settings)
    options = message_size_options(settings)
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


def open_aio_channel(
    address: str,
    settings: GrpcTransportSettings,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel (services calling services, chat front end, tests)."""
    credentials = _channel_credentials(address, settings)
    options = message_size_options(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
