"""TLS on the gRPC ports, over real sockets: who can talk to a server and who cannot."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lapse_common.grpc_probes import Probes
from lapse_common.grpc_transport import (
    MIB,
    GrpcTransportSettings,
    TransportMisconfigured,
    bind_server_port,
    message_size_options,
    open_aio_channel,
    open_channel,
)
from lapse_common.local_ca import LocalCertificates, ensure_local_certificates

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def certificates(tmp_path: Path) -> LocalCertificates:
    return ensure_local_certificates(tmp_path / "tls")


def server_settings(certificates: LocalCertificates, **more: object) -> GrpcTransportSettings:
    return GrpcTransportSettings(
        tls_certfile=certificates.certfile, tls_keyfile=certificates.keyfile, **more
    )


async def started(settings: GrpcTransportSettings) -> tuple[grpc.aio.Server, int]:
    """A server with just the health service, bound as a Lapse service binds its port."""
    server = grpc.aio.server(options=message_size_options(settings))
    probes = Probes()
    await probes.register(server, [])
    port = bind_server_port(server, "127.0.0.1:0", settings)
    await server.start()
    await probes.serving()
    return server, port


@pytest.fixture
async def tls_server(certificates: LocalCertificates) -> AsyncIterator[int]:
    server, port = await started(server_settings(certificates, max_message_bytes=MIB))
    yield port
    await server.stop(grace=None)


async def check(address: str, settings: GrpcTransportSettings) -> int:
    async with open_aio_channel(address, settings) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(answer.status)


async def test_a_client_trusting_the_ca_talks_to_the_tls_server(
    tls_server: int, certificates: LocalCertificates
) -> None:
    client = GrpcTransportSettings(tls_cafile=certificates.cafile)
    assert await check(f"127.0.0.1:{tls_server}", client) == SERVING
    # localhost is in the certificate too.
    assert await check(f"localhost:{tls_server}", client) == SERVING


def blocking_check(address: str, settings: GrpcTransportSettings) -> int:
    with open_channel(address, settings) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(answer.status)


async def test_the_blocking_channel_verifies_the_same_way(
    tls_server: int, certificates: LocalCertificates, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{tls_server}"
    # In a thread: the server runs on this test's event loop.
    trusted = GrpcTransportSettings(tls_cafile=certificates.cafile)
    assert await asyncio.to_thread(blocking_check, address, trusted) == SERVING
    impostor_ca = ensure_local_certificates(tmp_path / "other").cafile
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(
            blocking_check, address, GrpcTransportSettings(tls_cafile=impostor_ca)
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_without_the_ca_refuses_the_server(tls_server: int) -> None:
    # The system's CAs did not sign the local certificate: the handshake fails.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(f"127.0.0.1:{tls_server}", GrpcTransportSettings())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_from_another_ca_is_refused(
    certificates: LocalCertificates, tmp_path: Path
) -> None:
    """An impostor on the network with a certificate for 127.0.0.1 from a CA of its own."""
    impostor = ensure_local_certificates(tmp_path / "impostor")
    server, port = await started(server_settings(impostor))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(f"127.0.0.1:{port}", GrpcTransportSettings(tls_cafile=certificates.cafile))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=None)


async def test_a_certificate_for_another_host_is_refused(
    certificates: LocalCertificates, tmp_path: Path
) -> None:
    """Same CA, but the server is reached by a name its certificate does not carry."""
    client = GrpcTransportSettings(tls_cafile=certificates.cafile)
    server, port = await started(server_settings(certificates))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(f"127.0.0.2:{port}", client)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=None)


async def test_a_plaintext_client_gets_no_answer_from_the_tls_port(tls_server: int) -> None:
    plaintext = GrpcTransportSettings(allow_plaintext=True)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(f"127.0.0.1:{tls_server}", plaintext)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_uses_plaintext_only_when_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    server, port = await started(GrpcTransportSettings(allow_plaintext=True))
    try:
        # Not allowed: the client insists on TLS, which the plaintext server cannot speak.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(f"127.0.0.1:{port}", GrpcTransportSettings())
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await check(f"127.0.0.1:{port}", GrpcTransportSettings(allow_plaintext=True)) == (
            SERVING
        )
    finally:
        await server.stop(grace=None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("WITHOUT TLS" in w and f"127.0.0.1:{port}" in w for w in warnings), warnings
    assert sum("WITHOUT TLS" in w for w in warnings) >= 2  # the server's and the client's


async def test_a_ca_configured_client_never_falls_back_to_plaintext(
    certificates: LocalCertificates,
) -> None:
    server, port = await started(GrpcTransportSettings(allow_plaintext=True))
    try:
        client = GrpcTransportSettings(tls_cafile=certificates.cafile, allow_plaintext=True)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(f"127.0.0.1:{port}", client)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=None)


def test_a_server_without_certificate_or_plaintext_flag_refuses_to_bind() -> None:
    server = grpc.aio.server()
    with pytest.raises(TransportMisconfigured) as refused:
        bind_server_port(server, "127.0.0.1:0", GrpcTransportSettings())
    message = str(refused.value)
    assert "LAPSE_GRPC_TLS_CERTFILE" in message and "LAPSE_GRPC_ALLOW_PLAINTEXT" in message


def test_a_certificate_without_its_key_is_refused(certificates: LocalCertificates) -> None:
    settings = GrpcTransportSettings(tls_certfile=certificates.certfile, allow_plaintext=True)
    with pytest.raises(TransportMisconfigured, match="LAPSE_GRPC_TLS_KEYFILE is not set"):
        bind_server_port(grpc.aio.server(), "127.0.0.1:0", settings)


def test_unreadable_or_non_pem_files_are_named(
    certificates: LocalCertificates, tmp_path: Path
) -> None:
    missing = GrpcTransportSettings(
        tls_certfile=tmp_path / "absent.crt", tls_keyfile=certificates.keyfile
    )
    with pytest.raises(TransportMisconfigured, match=r"LAPSE_GRPC_TLS_CERTFILE=.*absent\.crt"):
        bind_server_port(grpc.aio.server(), "127.0.0.1:0", missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(TransportMisconfigured, match="LAPSE_GRPC_TLS_CAFILE=.*not a PEM file"):
        open_channel("127.0.0.1:1", GrpcTransportSettings(tls_cafile=garbage))


async def test_an_oversized_message_is_refused_before_the_handler(
    tls_server: int, certificates: LocalCertificates
) -> None:
    client = GrpcTransportSettings(tls_cafile=certificates.cafile, max_message_bytes=8 * MIB)
    async with open_aio_channel(f"127.0.0.1:{tls_server}", client) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="x" * (2 * MIB)), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_message_limit_has_bounds() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        GrpcTransportSettings(max_message_bytes=1000)
    assert GrpcTransportSettings().max_message_bytes == 4 * MIB


def test_local_certificates_are_kept_private_and_reused(tmp_path: Path) -> None:
    first = ensure_local_certificates(tmp_path / "tls")
    for private in (first.keyfile, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    ca, server = first.cafile.read_bytes(), first.certfile.read_bytes()
    again = ensure_local_certificates(tmp_path / "tls")
    assert (again.cafile.read_bytes(), again.certfile.read_bytes()) == (ca, server)
    # Another host: a new server certificate from the same CA.
    wider = ensure_local_certificates(tmp_path / "tls", hosts=("request",))
    assert wider.cafile.read_bytes() == ca
    assert wider.certfile.read_bytes() != server
