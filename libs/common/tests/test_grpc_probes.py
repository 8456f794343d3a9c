"""Health and reflection: public, over TLS, and showing nothing but the served services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from lapse_common.auth import AuthInterceptor, TokenVerifier, ensure_keypair
from lapse_common.grpc_probes import (
    HEALTH_SERVICE,
    REFLECTION_SERVICE,
    ExceptForProbes,
    Probes,
    descriptor_pool_of,
)
from lapse_common.grpc_transport import GrpcTransportSettings, bind_server_port, open_channel
from lapse_common.local_ca import LocalCertificates, ensure_local_certificates
from lapse_common.settings import AuthSettings

Status = health_pb2.HealthCheckResponse


@pytest.fixture
def certificates(tmp_path: Path) -> LocalCertificates:
    return ensure_local_certificates(tmp_path / "tls")


@pytest.fixture
async def guarded(
    certificates: LocalCertificates, tmp_path: Path
) -> AsyncIterator[tuple[int, Probes]]:
    """A server whose every call but the probes needs a bearer token, as in a service."""
    _, public_key = ensure_keypair(tmp_path / "keys", "dev-token")
    auth = AuthInterceptor(TokenVerifier.from_settings(AuthSettings(public_key_file=public_key, dev_mode=True)))
    server = grpc.aio.server(interceptors=[ExceptForProbes(auth)])
    probes = Probes()
    await probes.register(server, [])
    port = bind_server_port(
        server,
        "127.0.0.1:0",
        GrpcTransportSettings(tls_certfile=certificates.certfile, tls_keyfile=certificates.keyfile),
    )
    await server.start()
    yield port, probes
    await server.stop(grace=None)


def health_check(port: int, cafile: Path, service: str = "") -> int:
    settings = GrpcTransportSettings(tls_cafile=cafile)
    with open_channel(f"127.0.0.1:{port}", settings) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(answer.status)


def reflected_services(port: int, cafile: Path) -> list[str]:
    settings = GrpcTransportSettings(tls_cafile=cafile)
    with open_channel(f"127.0.0.1:{port}", settings) as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


async def test_health_needs_no_token_and_follows_the_service_state(
    guarded: tuple[int, Probes], certificates: LocalCertificates
) -> None:
    port, probes = guarded
    cafile = certificates.cafile
    # Registered but not started yet: a probe must not pass.
    assert await asyncio.to_thread(health_check, port, cafile) == Status.NOT_SERVING
    await probes.serving()
    for service in ("", HEALTH_SERVICE, REFLECTION_SERVICE):
        assert await asyncio.to_thread(health_check, port, cafile, service) == Status.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        await asyncio.to_thread(health_check, port, cafile, "lapse.v1.NoSuchService")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    await probes.shutting_down()
    assert await asyncio.to_thread(health_check, port, cafile) == Status.NOT_SERVING
    await probes.serving()  # after shutdown began, nothing brings it back
    assert await asyncio.to_thread(health_check, port, cafile) == Status.NOT_SERVING


async def test_reflection_needs_no_token_other_methods_still_do(
    guarded: tuple[int, Probes], certificates: LocalCertificates
) -> None:
    port, _ = guarded
    services = await asyncio.to_thread(reflected_services, port, certificates.cafile)
    assert sorted(services) == sorted([HEALTH_SERVICE, REFLECTION_SERVICE])

    def watch_without_token() -> None:
        settings = GrpcTransportSettings(tls_cafile=certificates.cafile)
        with open_channel(f"127.0.0.1:{port}", settings) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            next(iter(stream))

    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(watch_without_token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_reflection_pool_holds_only_the_services_and_their_imports() -> None:
    assert struct_pb2.Struct  # loaded in the process's default pool
    pool = descriptor_pool_of([HEALTH_SERVICE])
    assert pool.FindServiceByName(HEALTH_SERVICE).full_name == HEALTH_SERVICE
    for elsewhere in ("google.protobuf.Struct", REFLECTION_SERVICE):
        with pytest.raises(KeyError):
            pool.FindFileContainingSymbol(elsewhere)
